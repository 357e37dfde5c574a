//! Ranking prompts against images: cosine similarity, scaled by the model's logit scale,
//! then the family's scoring: softmax over the prompts of each image (CLIP-like), or a
//! sigmoid per prompt with the learned bias (SigLIP).

use candle_core::Tensor;

use crate::family::Scoring;
use crate::model::l2_normalize;

/// One prompt's score for one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Index of the prompt (label) in the order it was given.
    pub index: usize,
    /// Softmax of `exp(logit_scale) * similarity` over all prompts for this image, or, with
    /// [`Scoring::Sigmoid`], `sigmoid(exp(logit_scale) * similarity + logit_bias)` alone.
    pub probability: f32,
    /// Raw cosine similarity between the image and prompt embeddings.
    pub similarity: f32,
}

/// Scores every image (rows of `images`) against every prompt (rows of `texts`).
/// Neither input needs to be normalised. Each image's scores come back ranked by
/// probability, highest first; ties keep the prompts' order.
pub fn rank(
    images: &Tensor,
    texts: &Tensor,
    logit_scale: f32,
) -> candle_core::Result<Vec<Vec<Score>>> {
    let images = l2_normalize(&images.to_dtype(candle_core::DType::F32)?)?;
    let texts = l2_normalize(&texts.to_dtype(candle_core::DType::F32)?)?;
    let similarities: Vec<Vec<f32>> = images.matmul(&texts.t()?)?.to_vec2()?;
    let scale = f64::from(logit_scale).exp();
    Ok(similarities
        .iter()
        .map(|row| rank_row(row, scale))
        .collect())
}

/// Like [`rank`], with the family's scoring: `logit_bias` is added before a sigmoid
/// ([`Scoring::Sigmoid`]) and ignored by softmax, where it would cancel.
pub fn rank_scored(
    images: &Tensor,
    texts: &Tensor,
    logit_scale: f32,
    logit_bias: f32,
    scoring: Scoring,
) -> candle_core::Result<Vec<Vec<Score>>> {
    if scoring == Scoring::Softmax {
        return rank(images, texts, logit_scale);
    }
    let images = l2_normalize(&images.to_dtype(candle_core::DType::F32)?)?;
    let texts = l2_normalize(&texts.to_dtype(candle_core::DType::F32)?)?;
    let similarities: Vec<Vec<f32>> = images.matmul(&texts.t()?)?.to_vec2()?;
    let scale = f64::from(logit_scale).exp();
    Ok(similarities
        .iter()
        .map(|row| {
            let logits: Vec<f64> = row
                .iter()
                .map(|&s| scale * f64::from(s) + f64::from(logit_bias))
                .collect();
            rank_sigmoid(&logits, row)
        })
        .collect())
}

/// Ranks classes by the sigmoid of their `logits`, each independently, highest first (ties
/// keep the classes' order); `similarities[i]` is reported with class `i`.
pub fn rank_sigmoid(logits: &[f64], similarities: &[f32]) -> Vec<Score> {
    let mut scores: Vec<Score> = logits
        .iter()
        .zip(similarities)
        .enumerate()
        .map(|(index, (&l, &similarity))| Score {
            index,
            probability: (1.0 / (1.0 + (-l).exp())) as f32,
            similarity,
        })
        .collect();
    scores.sort_by(|a, b| {
        b.probability
            .total_cmp(&a.probability)
            .then(a.index.cmp(&b.index))
    });
    scores
}

/// Softmax over one image's similarities, in f64 so that the probabilities of confident
/// models still sum to one.
fn rank_row(similarities: &[f32], scale: f64) -> Vec<Score> {
    let logits: Vec<f64> = similarities.iter().map(|&s| scale * f64::from(s)).collect();
    rank_logits(&logits, similarities)
}

/// Ranks classes by the softmax of their `logits`, highest first (ties keep the classes'
/// order); `similarities[i]` is reported with class `i`. For scorers whose logits are not
/// a scaled cosine (few-shot examples, linear probes).
pub fn rank_logits(logits: &[f64], similarities: &[f32]) -> Vec<Score> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|&l| (l - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    let mut scores: Vec<Score> = exps
        .iter()
        .zip(similarities)
        .enumerate()
        .map(|(index, (&e, &similarity))| Score {
            index,
            probability: (e / total) as f32,
            similarity,
        })
        .collect();
    scores.sort_by(|a, b| {
        b.probability
            .total_cmp(&a.probability)
            .then(a.index.cmp(&b.index))
    });
    scores
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn ranks_by_scaled_cosine_softmax() {
        let device = Device::Cpu;
        // Image 0 points along x, image 1 along y (with a length that must not matter).
        let images = Tensor::new(&[[1.0f32, 0.0], [0.0, 5.0]], &device).unwrap();
        let texts = Tensor::new(&[[1.0f32, 1.0], [0.0, 2.0], [3.0, 0.0]], &device).unwrap();
        let scale = 100f32.ln();
        let ranked = rank(&images, &texts, scale).unwrap();

        let half = std::f32::consts::FRAC_1_SQRT_2;
        let expect = |sims: [f32; 3]| {
            let exps: Vec<f64> = sims.iter().map(|&s| (100.0 * f64::from(s)).exp()).collect();
            let total: f64 = exps.iter().sum();
            exps.iter().map(|e| (e / total) as f32).collect::<Vec<_>>()
        };
        let p0 = expect([half, 0.0, 1.0]);
        assert_eq!(
            ranked[0].iter().map(|s| s.index).collect::<Vec<_>>(),
            vec![2, 0, 1]
        );
        for score in &ranked[0] {
            assert!((score.probability - p0[score.index]).abs() < 1e-6);
        }
        assert!((ranked[0][0].similarity - 1.0).abs() < 1e-6);
        assert!((ranked[0][1].similarity - half).abs() < 1e-6);

        let p1 = expect([half, 1.0, 0.0]);
        assert_eq!(ranked[1][0].index, 1);
        assert!((ranked[1][0].probability - p1[1]).abs() < 1e-6);
        let total: f32 = ranked[1].iter().map(|s| s.probability).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }

    #[test]
    fn sigmoid_scores_each_label_alone_with_the_bias() {
        let device = Device::Cpu;
        let images = Tensor::new(&[[1.0f32, 0.0]], &device).unwrap();
        let texts = Tensor::new(&[[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]], &device).unwrap();
        let ranked = rank_scored(&images, &texts, 10f32.ln(), -2.0, Scoring::Sigmoid)
            .unwrap()
            .remove(0);
        let sigmoid = |x: f64| (1.0 / (1.0 + (-x).exp())) as f32;
        let half = std::f64::consts::FRAC_1_SQRT_2;
        assert_eq!(
            ranked.iter().map(|s| s.index).collect::<Vec<_>>(),
            [0, 2, 1]
        );
        assert!((ranked[0].probability - sigmoid(10.0 - 2.0)).abs() < 1e-6);
        assert!((ranked[1].probability - sigmoid(10.0 * half - 2.0)).abs() < 1e-6);
        assert!((ranked[2].probability - sigmoid(-2.0)).abs() < 1e-6);
        // Independent: they do not sum to one.
        let total: f32 = ranked.iter().map(|s| s.probability).sum();
        assert!(total > 1.5, "{total}");
    }

    #[test]
    fn ties_keep_prompt_order() {
        let scores = rank_row(&[0.5, 0.5, 0.5], 100.0);
        assert_eq!(
            scores.iter().map(|s| s.index).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!((scores[0].probability - 1.0 / 3.0).abs() < 1e-6);
    }
}
