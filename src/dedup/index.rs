//! The approximate search of [`super::pairs_approximate`]: an HNSW graph (instant-distance)
//! over the unit embeddings, asked for each image's nearest neighbours.

use std::collections::HashSet;

use instant_distance::{Builder, Point, Search};
use rayon::prelude::*;

use super::{DedupError, Pair, UnitRows, NEIGHBOURS};

/// A unit embedding; the distance is `1 - cosine`.
#[derive(Clone, Copy)]
struct Unit<'a>(&'a [f32]);

impl Point for Unit<'_> {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - dot(self.0, other.0)
    }
}

/// Eight independent sums, so the compiler keeps them in vector registers.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Every image's neighbours within `threshold`, as pairs sorted by `(a, b)`.
pub(super) fn neighbour_pairs(rows: &UnitRows, threshold: f32) -> Result<Vec<Pair>, DedupError> {
    let n = rows.len();
    if n < 2 {
        return Ok(Vec::new());
    }
    let points: Vec<Unit<'_>> = (0..n).map(|i| Unit(rows.row(i))).collect();
    // A fixed seed: the same images give the same graph, so the same groups.
    let (hnsw, ids) = Builder::default()
        .ef_construction(40)
        .ef_search(NEIGHBOURS * 2)
        .seed(0x5eed)
        .build_hnsw(points.clone());
    let mut index_of = vec![0usize; n];
    for (i, id) in ids.iter().enumerate() {
        index_of[id.into_inner() as usize] = i;
    }
    let found: Vec<Vec<Pair>> = points
        .par_iter()
        .enumerate()
        .map_init(Search::default, |search, (i, point)| {
            hnsw.search(point, search)
                .take(NEIGHBOURS + 1)
                .filter_map(|item| {
                    let j = index_of[item.pid.into_inner() as usize];
                    let similarity = 1.0 - item.distance;
                    (j != i && similarity >= threshold).then(|| Pair {
                        a: i.min(j),
                        b: i.max(j),
                        similarity,
                    })
                })
                .collect()
        })
        .collect();
    let mut seen = HashSet::new();
    let mut pairs: Vec<Pair> = found
        .into_iter()
        .flatten()
        .filter(|p| seen.insert((p.a, p.b)))
        .collect();
    pairs.sort_by_key(|p| (p.a, p.b));
    Ok(pairs)
}
