//! Classification metrics from true classes and ranked predictions: the confusion matrix,
//! top-k accuracy, per-class precision, recall and F1, their macro averages, and the most
//! confused pairs of classes.
//!
//! Classes are indices `0..classes`. A ratio whose denominator is zero (precision of a
//! class never predicted, recall of a class with no images, F1 when precision and recall
//! are both 0, accuracy of no images) is defined as 0, as scikit-learn does with
//! `zero_division=0`, so every number is finite.

use serde::Serialize;

/// Predictions that do not fit the classes they claim to be about: a bug in the caller.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "internal error: class {index} is out of range for {classes} classes; please report it"
    )]
    ClassOutOfRange { index: usize, classes: usize },
    #[error("internal error: {truth} true classes but {predicted} predictions; please report it")]
    LengthMismatch { truth: usize, predicted: usize },
    #[error("internal error: an image has an empty ranking; please report it")]
    EmptyRanking,
}

/// `numerator / denominator`, or 0 when the denominator is 0.
fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// Counts of (true class, predicted class): rows are true classes, columns predictions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    /// Row-major, `classes × classes`.
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// An empty matrix for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// The matrix of paired true and predicted classes.
    pub fn from_predictions(
        classes: usize,
        truth: &[usize],
        predicted: &[usize],
    ) -> Result<Self, MetricsError> {
        if truth.len() != predicted.len() {
            return Err(MetricsError::LengthMismatch {
                truth: truth.len(),
                predicted: predicted.len(),
            });
        }
        let mut matrix = Self::new(classes);
        for (&t, &p) in truth.iter().zip(predicted) {
            matrix.add(t, p)?;
        }
        Ok(matrix)
    }

    /// Counts one image of class `truth` predicted as `predicted`.
    pub fn add(&mut self, truth: usize, predicted: usize) -> Result<(), MetricsError> {
        let index = truth.max(predicted);
        if index >= self.classes {
            return Err(MetricsError::ClassOutOfRange {
                index,
                classes: self.classes,
            });
        }
        self.counts[truth * self.classes + predicted] += 1;
        Ok(())
    }

    /// Number of classes (rows and columns).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Images of class `truth` predicted as `predicted` (0 outside the matrix).
    pub fn count(&self, truth: usize, predicted: usize) -> u64 {
        if truth < self.classes && predicted < self.classes {
            self.counts[truth * self.classes + predicted]
        } else {
            0
        }
    }

    /// One row per true class.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        if self.classes == 0 {
            return Vec::new();
        }
        self.counts
            .chunks(self.classes)
            .map(<[u64]>::to_vec)
            .collect()
    }

    /// Images of class `truth` (its support).
    pub fn row_total(&self, truth: usize) -> u64 {
        (0..self.classes).map(|p| self.count(truth, p)).sum()
    }

    /// Images predicted as `predicted`.
    pub fn column_total(&self, predicted: usize) -> u64 {
        (0..self.classes).map(|t| self.count(t, predicted)).sum()
    }

    /// All images counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Images predicted as their true class.
    pub fn correct(&self) -> u64 {
        (0..self.classes).map(|c| self.count(c, c)).sum()
    }

    /// Top-1 accuracy: correct / total (0 with no images).
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct(), self.total())
    }

    /// Each row divided by its total: the share of each true class given each prediction.
    /// A row with no images is all zeros.
    pub fn row_normalised(&self) -> Vec<Vec<f64>> {
        (0..self.classes)
            .map(|t| {
                let total = self.row_total(t);
                (0..self.classes)
                    .map(|p| ratio(self.count(t, p), total))
                    .collect()
            })
            .collect()
    }
}

/// The share of images whose true class is among the first `k` classes of their ranking
/// (best first). 0 with no images.
pub fn top_k_accuracy<R: AsRef<[usize]>>(
    truth: &[usize],
    rankings: &[R],
    k: usize,
) -> Result<f64, MetricsError> {
    if truth.len() != rankings.len() {
        return Err(MetricsError::LengthMismatch {
            truth: truth.len(),
            predicted: rankings.len(),
        });
    }
    let hits = truth
        .iter()
        .zip(rankings)
        .filter(|(t, ranking)| ranking.as_ref().iter().take(k).any(|c| c == *t))
        .count();
    Ok(ratio(hits as u64, truth.len() as u64))
}

/// Precision, recall and F1 of one class, one-vs-rest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// Of the images predicted as this class, the share that are (0 if none predicted).
    pub precision: f64,
    /// Of the images of this class, the share predicted as it (0 if it has no images).
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 if both are 0).
    pub f1: f64,
    /// Images of this class.
    pub support: u64,
    /// Images predicted as this class.
    pub predicted: u64,
}

/// Every class's precision, recall and F1, in class order.
pub fn per_class(matrix: &ConfusionMatrix) -> Vec<ClassMetrics> {
    (0..matrix.classes())
        .map(|c| {
            let hits = matrix.count(c, c);
            let support = matrix.row_total(c);
            let predicted = matrix.column_total(c);
            let precision = ratio(hits, predicted);
            let recall = ratio(hits, support);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassMetrics {
                precision,
                recall,
                f1,
                support,
                predicted,
            }
        })
        .collect()
}

/// Unweighted means over classes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MacroAverage {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Classes averaged over.
    pub classes: usize,
}

/// The mean precision, recall and F1 over the classes that occur, as true class or as
/// prediction (scikit-learn's choice when no label list is given): a class with no images
/// that is never predicted says nothing about the classifier and is left out. All zeros
/// when no class occurs.
pub fn macro_average(classes: &[ClassMetrics]) -> MacroAverage {
    let present: Vec<&ClassMetrics> = classes
        .iter()
        .filter(|c| c.support > 0 || c.predicted > 0)
        .collect();
    if present.is_empty() {
        return MacroAverage {
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            classes: 0,
        };
    }
    let n = present.len() as f64;
    let mean = |field: fn(&ClassMetrics) -> f64| present.iter().map(|c| field(c)).sum::<f64>() / n;
    MacroAverage {
        precision: mean(|c| c.precision),
        recall: mean(|c| c.recall),
        f1: mean(|c| c.f1),
        classes: present.len(),
    }
}

/// An off-diagonal cell of the confusion matrix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ConfusedPair {
    pub truth: usize,
    pub predicted: usize,
    /// Images of `truth` predicted as `predicted`.
    pub count: u64,
    /// `count` as a share of the images of `truth`.
    pub share: f64,
}

/// The `n` largest non-zero off-diagonal counts, largest first; ties go to the larger share
/// of the true class, then to the lower (true, predicted) indices.
pub fn most_confused(matrix: &ConfusionMatrix, n: usize) -> Vec<ConfusedPair> {
    let mut pairs: Vec<ConfusedPair> = (0..matrix.classes())
        .flat_map(|t| (0..matrix.classes()).map(move |p| (t, p)))
        .filter(|(t, p)| t != p && matrix.count(*t, *p) > 0)
        .map(|(truth, predicted)| {
            let count = matrix.count(truth, predicted);
            ConfusedPair {
                truth,
                predicted,
                count,
                share: ratio(count, matrix.row_total(truth)),
            }
        })
        .collect();
    pairs.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(b.share.total_cmp(&a.share))
            .then((a.truth, a.predicted).cmp(&(b.truth, b.predicted)))
    });
    pairs.truncate(n);
    pairs
}

/// Everything measured for one set of predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The `k` of [`Self::top_k`]: at most 5, at most the number of classes.
    pub k: usize,
    /// Share of images whose top prediction is right.
    pub top1: f64,
    /// Share of images whose true class is among the top `k` predictions.
    pub top_k: f64,
    pub confusion: ConfusionMatrix,
    /// One entry per class, in class order.
    pub classes: Vec<ClassMetrics>,
    pub macro_average: MacroAverage,
}

/// The `k` reported beside top-1: 5, or fewer when there are fewer classes.
pub fn default_k(classes: usize) -> usize {
    classes.min(5)
}

impl Evaluation {
    /// Measures rankings (class indices, best first, at least [`default_k`] long where
    /// there are that many classes) against true classes.
    pub fn new<R: AsRef<[usize]>>(
        classes: usize,
        truth: &[usize],
        rankings: &[R],
    ) -> Result<Self, MetricsError> {
        let predicted = rankings
            .iter()
            .map(|r| {
                r.as_ref()
                    .first()
                    .copied()
                    .ok_or(MetricsError::EmptyRanking)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let confusion = ConfusionMatrix::from_predictions(classes, truth, &predicted)?;
        let k = default_k(classes);
        let per_class = per_class(&confusion);
        Ok(Self {
            k,
            top1: confusion.accuracy(),
            top_k: top_k_accuracy(truth, rankings, k)?,
            macro_average: macro_average(&per_class),
            classes: per_class,
            confusion,
        })
    }

    /// Images measured.
    pub fn images(&self) -> u64 {
        self.confusion.total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// 3 classes, 10 images; worked out by hand:
    ///
    /// ```text
    ///            pred 0  pred 1  pred 2
    /// true 0        3       1       0     support 4
    /// true 1        2       2       0     support 4
    /// true 2        0       1       1     support 2
    /// predicted     5       4       1
    /// ```
    fn example() -> (Vec<usize>, Vec<usize>) {
        let truth = vec![0, 0, 0, 0, 1, 1, 1, 1, 2, 2];
        let predicted = vec![0, 0, 0, 1, 0, 0, 1, 1, 1, 2];
        (truth, predicted)
    }

    #[test]
    fn confusion_matrix_counts_rows_as_truth() {
        let (truth, predicted) = example();
        let m = ConfusionMatrix::from_predictions(3, &truth, &predicted).unwrap();
        assert_eq!(m.rows(), vec![vec![3, 1, 0], vec![2, 2, 0], vec![0, 1, 1]]);
        assert_eq!((m.row_total(0), m.row_total(2)), (4, 2));
        assert_eq!((m.column_total(0), m.column_total(1)), (5, 4));
        assert_eq!((m.total(), m.correct()), (10, 6));
        assert!(close(m.accuracy(), 0.6));
        let norm = m.row_normalised();
        assert!(close(norm[0][0], 0.75) && close(norm[1][1], 0.5) && close(norm[2][1], 0.5));
        assert_eq!(m.count(5, 0), 0);
    }

    #[test]
    fn per_class_scores_match_hand_computation() {
        let (truth, predicted) = example();
        let m = ConfusionMatrix::from_predictions(3, &truth, &predicted).unwrap();
        let c = per_class(&m);
        // Class 0: P = 3/5, R = 3/4, F1 = 2·0.6·0.75/1.35 = 2/3.
        assert!(close(c[0].precision, 0.6) && close(c[0].recall, 0.75));
        assert!(close(c[0].f1, 2.0 / 3.0));
        // Class 1: P = 2/4, R = 2/4, F1 = 1/2.
        assert!(close(c[1].precision, 0.5) && close(c[1].recall, 0.5) && close(c[1].f1, 0.5));
        // Class 2: P = 1/1, R = 1/2, F1 = 2/3.
        assert!(close(c[2].precision, 1.0) && close(c[2].recall, 0.5));
        assert!(close(c[2].f1, 2.0 / 3.0));
        assert_eq!((c[2].support, c[2].predicted), (2, 1));
        let avg = macro_average(&c);
        assert!(close(avg.precision, 2.1 / 3.0));
        assert!(close(avg.recall, 1.75 / 3.0));
        assert!(close(avg.f1, (2.0 / 3.0 + 0.5 + 2.0 / 3.0) / 3.0));
        assert_eq!(avg.classes, 3);
    }

    #[test]
    fn zero_denominators_give_zero() {
        // Class 1 is never predicted and class 2 has no images; class 3 occurs nowhere.
        let m = ConfusionMatrix::from_predictions(4, &[0, 1, 1], &[0, 0, 2]).unwrap();
        let c = per_class(&m);
        assert_eq!((c[1].precision, c[1].recall, c[1].f1), (0.0, 0.0, 0.0));
        assert_eq!((c[2].precision, c[2].recall, c[2].f1), (0.0, 0.0, 0.0));
        assert!(close(c[0].precision, 0.5) && close(c[0].recall, 1.0));
        // Class 3 is left out of the averages; classes 0, 1 and 2 are in.
        let avg = macro_average(&c);
        assert_eq!(avg.classes, 3);
        assert!(close(avg.precision, 0.5 / 3.0));
        assert!(close(avg.f1, (2.0 / 3.0) / 3.0));
        let empty = ConfusionMatrix::new(2);
        assert_eq!(empty.accuracy(), 0.0);
        assert_eq!(macro_average(&per_class(&empty)).f1, 0.0);
        assert_eq!(top_k_accuracy::<Vec<usize>>(&[], &[], 5).unwrap(), 0.0);
    }

    #[test]
    fn top_k_counts_the_true_class_among_the_first_k() {
        let truth = [0, 1, 2, 2];
        let rankings = [vec![0, 1, 2], vec![2, 1, 0], vec![0, 1, 2], vec![1, 0, 2]];
        assert!(close(top_k_accuracy(&truth, &rankings, 1).unwrap(), 0.25));
        assert!(close(top_k_accuracy(&truth, &rankings, 2).unwrap(), 0.5));
        assert!(close(top_k_accuracy(&truth, &rankings, 3).unwrap(), 1.0));
        assert!(matches!(
            top_k_accuracy(&truth, &rankings[..2], 1),
            Err(MetricsError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn most_confused_pairs_are_ordered_by_count_then_share() {
        let (truth, predicted) = example();
        let m = ConfusionMatrix::from_predictions(3, &truth, &predicted).unwrap();
        let pairs = most_confused(&m, 10);
        let cells: Vec<_> = pairs
            .iter()
            .map(|p| (p.truth, p.predicted, p.count))
            .collect();
        // 1→0 has 2; 2→1 (1 of 2 = 50%) beats 0→1 (1 of 4 = 25%).
        assert_eq!(cells, vec![(1, 0, 2), (2, 1, 1), (0, 1, 1)]);
        assert!(close(pairs[0].share, 0.5) && close(pairs[2].share, 0.25));
        assert_eq!(most_confused(&m, 1).len(), 1);
    }

    #[test]
    fn evaluation_puts_it_together_and_refuses_bad_input() {
        let truth = [0, 1, 2, 2];
        let rankings = [vec![0, 1, 2], vec![2, 1, 0], vec![0, 1, 2], vec![2, 0, 1]];
        let e = Evaluation::new(3, &truth, &rankings).unwrap();
        assert_eq!(e.k, 3);
        assert!(close(e.top1, 0.5) && close(e.top_k, 1.0));
        assert_eq!(e.images(), 4);
        assert_eq!(e.confusion.count(2, 0), 1);
        assert!(matches!(
            Evaluation::new(2, &truth, &rankings),
            Err(MetricsError::ClassOutOfRange { .. })
        ));
        assert!(matches!(
            Evaluation::new(3, &[0], &[Vec::<usize>::new()]),
            Err(MetricsError::EmptyRanking)
        ));
        assert_eq!(default_k(100), 5);
        assert_eq!(default_k(3), 3);
    }
}
