//! Greedy and beam search as transformers 5.23 runs them (`GenerationMixin._sample` with
//! `do_sample=False`, and `_beam_search`), over any decoder with a key/value cache.
//!
//! Every item of a batch (an image, or an image and a question) is searched on its own:
//! an item leaves the batch when its sequence (greedy) or its beams (beam search) are done,
//! and the others go on without it. transformers keeps finished items in the batch until
//! all are done, but freezes them (greedy pads them; beam search stops updating their
//! finished hypotheses), so each item's result is the same either way.
//!
//! The logits processors are those `_get_logits_processor` builds from the settings, in
//! its order: repetition penalty, no-repeat n-grams, minimum length. Greedy search applies
//! them to the logits and takes the first maximum (`torch.argmax`); beam search applies them
//! to the log-softmax of the logits and adds the beam's running score.

use super::settings::{EarlyStopping, Resolved};
use super::CaptionError;

/// A decoder generation runs on: logits for new tokens of many sequences at once.
pub(crate) trait Decoder {
    /// Per-sequence key/value state.
    type Cache: Clone;

    /// Logits per step.
    fn vocab(&self) -> usize;

    /// An empty cache with room for `capacity` tokens.
    fn new_cache(&self, capacity: usize) -> Self::Cache;

    /// Feeds `n` new tokens to each sequence (`ids[r * n..][..n]`, of batch item
    /// `items[r]`) and returns the logits after each one's last new token, `(rows, vocab)`.
    fn step(
        &self,
        ids: &[u32],
        n: usize,
        caches: &mut [&mut Self::Cache],
        items: &[usize],
    ) -> Result<Vec<f32>, CaptionError>;
}

/// One generated sequence.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sequence {
    /// The whole sequence: the start token, the prompt, the generated tokens (the end token
    /// included when the sequence ended with it).
    pub tokens: Vec<u32>,
    /// Greedy: the sum of the log-probabilities (log-softmax of the processed logits) of
    /// the generated tokens. Beams: transformers' `sequences_scores`, the sum of the
    /// processed log-probabilities divided by `generated_length ^ length_penalty`.
    pub log_prob: f64,
}

/// Generates one sequence for each of `items` batch items, all starting from `prefix`.
pub(crate) fn generate<D: Decoder>(
    decoder: &D,
    items: usize,
    prefix: &[u32],
    settings: &Resolved,
) -> Result<Vec<Sequence>, CaptionError> {
    if prefix.is_empty() {
        return Err(CaptionError::Settings {
            reason: "generation needs at least the start token".into(),
        });
    }
    if settings.num_beams == 1 {
        greedy(decoder, items, prefix, settings)
    } else {
        beam_search(decoder, items, prefix, settings)
    }
}

/// The logits processors, in place, for a sequence holding `tokens` so far.
// https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/generation/utils.py#L1466-L1526
fn process(scores: &mut [f32], tokens: &[u32], s: &Resolved) {
    let vocab = scores.len();
    // RepetitionPenaltyLogitsProcessor: every token present (once, however often it occurs).
    if s.repetition_penalty != 1.0 {
        let mut seen: Vec<u32> = tokens
            .iter()
            .copied()
            .filter(|&t| (t as usize) < vocab)
            .collect();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            let v = &mut scores[t as usize];
            *v = if *v < 0.0 {
                *v * s.repetition_penalty
            } else {
                *v / s.repetition_penalty
            };
        }
    }
    // NoRepeatNGramLogitsProcessor: a window whose first n-1 tokens equal the last n-1
    // bans its last token.
    let n = s.no_repeat_ngram_size;
    if n > 0 && tokens.len() >= n {
        let len = tokens.len();
        let suffix = &tokens[len + 1 - n..];
        for start in 0..=len - n {
            if &tokens[start..start + n - 1] == suffix {
                if let Some(v) = scores.get_mut(tokens[start + n - 1] as usize) {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
    }
    // MinLengthLogitsProcessor: the whole sequence counts, start token and prompt included.
    if tokens.len() < s.min_length {
        if let Some(v) = scores.get_mut(s.eos as usize) {
            *v = f32::NEG_INFINITY;
        }
    }
}

/// `log_softmax` of a row, in f32 as torch computes it for beam search.
fn log_softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
    let lse = max + sum.ln();
    for v in row.iter_mut() {
        *v -= lse;
    }
}

/// `log_softmax(row)[token]`, in f64.
fn log_prob_of(row: &[f32], token: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row[token] as f64 - max - sum.ln()
}

/// The caches of the rows still running, in row order (`alive` ascending).
fn select<'c, C>(caches: &'c mut [C], alive: &[usize]) -> Vec<&'c mut C> {
    let mut wanted = alive.iter().peekable();
    caches
        .iter_mut()
        .enumerate()
        .filter_map(|(i, c)| (wanted.next_if(|&&w| w == i).is_some()).then_some(c))
        .collect()
}

// https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/generation/utils.py#L3122-L3340
fn greedy<D: Decoder>(
    decoder: &D,
    items: usize,
    prefix: &[u32],
    s: &Resolved,
) -> Result<Vec<Sequence>, CaptionError> {
    let vocab = decoder.vocab();
    let mut sequences: Vec<Sequence> = (0..items)
        .map(|_| Sequence {
            tokens: prefix.to_vec(),
            log_prob: 0.0,
        })
        .collect();
    let mut caches: Vec<D::Cache> = (0..items)
        .map(|_| decoder.new_cache(s.max_length))
        .collect();
    let mut alive: Vec<usize> = (0..items).collect();
    let mut ids: Vec<u32> = alive.iter().flat_map(|_| prefix.iter().copied()).collect();
    let mut n = prefix.len();
    while !alive.is_empty() {
        let mut logits = decoder.step(&ids, n, &mut select(&mut caches, &alive), &alive)?;
        let mut next = Vec::with_capacity(alive.len());
        ids.clear();
        for (row, &item) in alive.iter().enumerate() {
            let scores = &mut logits[row * vocab..][..vocab];
            let seq = &mut sequences[item];
            process(scores, &seq.tokens, s);
            // The first maximum, as torch.argmax.
            let token = scores
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 {
                        (i, v)
                    } else {
                        best
                    }
                })
                .0;
            seq.log_prob += log_prob_of(scores, token);
            seq.tokens.push(token as u32);
            if token as u32 != s.eos && seq.tokens.len() < s.max_length {
                next.push(item);
                ids.push(token as u32);
            }
        }
        alive = next;
        n = 1;
    }
    Ok(sequences)
}

/// transformers adds this to the scores of candidates it rules out.
const OUT: f32 = -1.0e9;

/// A finished hypothesis slot (`sequences`, `beam_scores`, `is_sent_finished`).
#[derive(Debug, Clone)]
struct Slot {
    tokens: Vec<u32>,
    score: f32,
    finished: bool,
}

/// One item's beam search state.
struct Beams<C> {
    /// Running beams: tokens, running score (sum of processed log-probs), cache.
    running: Vec<(Vec<u32>, f32, C)>,
    /// `num_beams` slots, best first.
    slots: Vec<Slot>,
    /// `is_early_stop_heuristic_unsatisfied`.
    improvable: bool,
    done: bool,
}

/// A continuation of a running beam.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    score: f32,
    beam: usize,
    token: u32,
}

/// The `k` best candidates, best first, ties to the lower flat index (`beam * vocab +
/// token`) as they are produced in that order.
fn top_k(scores: impl Iterator<Item = Candidate>, k: usize) -> Vec<Candidate> {
    let mut best: Vec<Candidate> = Vec::with_capacity(k + 1);
    for c in scores {
        // Only a strictly better score displaces the last kept one (NaN never does).
        if best.len() == k
            && c.score.partial_cmp(&best[k - 1].score) != Some(std::cmp::Ordering::Greater)
        {
            continue;
        }
        let at = best.partition_point(|b| b.score >= c.score);
        best.insert(at, c);
        best.truncate(k);
    }
    best
}

/// `length ^ length_penalty` as Python computes `int ** float`.
fn length_norm(length: usize, penalty: f32) -> f32 {
    (length as f64).powf(penalty as f64) as f32
}

// https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/generation/utils.py#L3575-L3917
fn beam_search<D: Decoder>(
    decoder: &D,
    items: usize,
    prefix: &[u32],
    s: &Resolved,
) -> Result<Vec<Sequence>, CaptionError> {
    let vocab = decoder.vocab();
    let k = s.num_beams;
    // Candidates kept per step: (1 + number of end tokens) * num_beams.
    let keep = 2 * k;
    if vocab < keep {
        return Err(CaptionError::Settings {
            reason: format!("{k} beams need a vocabulary of at least {keep} tokens"),
        });
    }
    let prompt_len = prefix.len();
    // Step 0: every beam of an item holds the same prefix and only beam 0 counts (the
    // others start at -1e9), so one row per item is fed and continued.
    let mut beams: Vec<Beams<D::Cache>> = (0..items)
        .map(|_| Beams {
            running: vec![(prefix.to_vec(), 0.0, decoder.new_cache(s.max_length))],
            slots: vec![
                Slot {
                    tokens: Vec::new(),
                    score: OUT,
                    finished: false,
                };
                k
            ],
            improvable: true,
            done: false,
        })
        .collect();
    let mut n = prompt_len;
    loop {
        let alive: Vec<usize> = (0..items).filter(|&i| !beams[i].done).collect();
        if alive.is_empty() {
            break;
        }
        let mut ids = Vec::new();
        let mut owners = Vec::new();
        for &item in &alive {
            for (tokens, _, _) in &beams[item].running {
                ids.extend_from_slice(&tokens[tokens.len() - n..]);
                owners.push(item);
            }
        }
        let mut caches: Vec<&mut D::Cache> = beams
            .iter_mut()
            .filter(|b| !b.done)
            .flat_map(|b| b.running.iter_mut().map(|(_, _, cache)| cache))
            .collect();
        let mut logits = decoder.step(&ids, n, &mut caches, &owners)?;
        n = 1;
        let mut row = 0;
        for &item in &alive {
            let b = &mut beams[item];
            let rows = b.running.len();
            let block = &mut logits[row * vocab..][..rows * vocab];
            row += rows;
            advance(b, block, vocab, s, prompt_len);
        }
    }
    Ok(beams
        .into_iter()
        .map(|b| {
            let best = &b.slots[0];
            Sequence {
                tokens: best.tokens.clone(),
                log_prob: best.score as f64,
            }
        })
        .collect())
}

/// One beam-search step of one item, given the logits of its running beams.
// https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/generation/utils.py#L3374-L3573
fn advance<C: Clone>(
    b: &mut Beams<C>,
    logits: &mut [f32],
    vocab: usize,
    s: &Resolved,
    prompt_len: usize,
) {
    let k = s.num_beams;
    let keep = 2 * k;
    let cur_len = b.running[0].0.len();
    for (beam, (tokens, score, _)) in b.running.iter().enumerate() {
        let row = &mut logits[beam * vocab..][..vocab];
        log_softmax(row);
        process(row, tokens, s);
        for v in row.iter_mut() {
            *v += *score;
        }
    }
    let candidates = top_k(
        logits.iter().enumerate().map(|(i, &score)| Candidate {
            score,
            beam: i / vocab,
            token: (i % vocab) as u32,
        }),
        keep,
    );
    let hits: Vec<bool> = candidates
        .iter()
        .map(|c| c.token == s.eos || cur_len + 1 >= s.max_length)
        .collect();
    // _get_running_beams_for_next_iteration
    let next_running = top_k(
        candidates
            .iter()
            .zip(&hits)
            .enumerate()
            .map(|(i, (c, &hit))| Candidate {
                score: if hit { c.score + OUT } else { c.score + 0.0 },
                beam: i,
                token: c.token,
            }),
        k,
    );
    // _update_finished_beams
    let all_finished = b.slots.iter().all(|slot| slot.finished);
    let norm = length_norm(cur_len + 1 - prompt_len, s.length_penalty);
    let mut merged: Vec<(Slot, usize)> = b.slots.iter().cloned().map(|s| (s, 0)).collect();
    for (i, (c, &hit)) in candidates.iter().zip(&hits).enumerate() {
        let just_finished = hit && i < k;
        let mut score = c.score / norm;
        if all_finished && s.early_stopping == EarlyStopping::Finished {
            score += OUT;
        }
        if !b.improvable {
            score += OUT;
        }
        if !just_finished {
            score += OUT;
        }
        let mut tokens = b.running[c.beam].0.clone();
        tokens.push(c.token);
        merged.push((
            Slot {
                tokens,
                score,
                finished: just_finished,
            },
            0,
        ));
    }
    let order = top_k(
        merged.iter().enumerate().map(|(i, (slot, _))| Candidate {
            score: slot.score,
            beam: i,
            token: 0,
        }),
        k,
    );
    b.slots = order.iter().map(|c| merged[c.beam].0.clone()).collect();
    // The new running beams, each continuing its parent's cache.
    let parents: Vec<usize> = next_running
        .iter()
        .map(|r| candidates[r.beam].beam)
        .collect();
    let mut old: Vec<Option<(Vec<u32>, f32, C)>> = std::mem::take(&mut b.running)
        .into_iter()
        .map(Some)
        .collect();
    let mut uses = vec![0usize; old.len()];
    for &p in &parents {
        uses[p] += 1;
    }
    for (r, &p) in next_running.iter().zip(&parents) {
        uses[p] -= 1;
        // The last beam continuing a parent takes its cache; the others copy it.
        let parent = if uses[p] == 0 {
            old[p].take()
        } else {
            old[p].clone()
        };
        if let Some((mut tokens, _, cache)) = parent {
            tokens.push(candidates[r.beam].token);
            b.running.push((tokens, r.score, cache));
        }
    }
    // _check_early_stop_heuristic, after the length grew by one.
    let cur_len = cur_len + 1;
    let best_length = if s.early_stopping == EarlyStopping::Never && s.length_penalty > 0.0 {
        s.max_length - prompt_len
    } else {
        cur_len - prompt_len
    };
    let best_possible = b.running[0].1 / length_norm(best_length, s.length_penalty);
    let worst = b
        .slots
        .iter()
        .map(|slot| slot.score)
        .fold(f32::INFINITY, f32::min);
    b.improvable &= b
        .slots
        .iter()
        .any(|slot| best_possible > if slot.finished { worst } else { OUT });
    // _beam_search_has_unfinished_sequences, for this item alone.
    let full =
        b.slots.iter().all(|slot| slot.finished) && s.early_stopping == EarlyStopping::Finished;
    b.done = !b.improvable || full || hits.iter().all(|&h| h);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoder whose next-token log-probabilities depend only on the last token, from a
    /// table; batch item `i` adds `5 i` to the end token's logit.
    struct Table {
        rows: Vec<Vec<f32>>,
    }

    impl Decoder for Table {
        type Cache = Vec<u32>;

        fn vocab(&self) -> usize {
            self.rows[0].len()
        }

        fn new_cache(&self, _capacity: usize) -> Vec<u32> {
            Vec::new()
        }

        fn step(
            &self,
            ids: &[u32],
            n: usize,
            caches: &mut [&mut Vec<u32>],
            items: &[usize],
        ) -> Result<Vec<f32>, CaptionError> {
            let mut out = Vec::new();
            for (r, cache) in caches.iter_mut().enumerate() {
                cache.extend_from_slice(&ids[r * n..][..n]);
                let mut row = self.rows[*cache.last().unwrap() as usize].clone();
                row[0] += 5.0 * items[r] as f32;
                out.extend(row);
            }
            Ok(out)
        }
    }

    fn settings(num_beams: usize, max_length: usize) -> Resolved {
        Resolved {
            num_beams,
            max_length,
            min_length: 0,
            repetition_penalty: 1.0,
            length_penalty: 1.0,
            no_repeat_ngram_size: 0,
            early_stopping: EarlyStopping::Heuristic,
            eos: 0,
        }
    }

    /// Tokens: 0 end, 1 start, 2 "likely first but a dead end", 3 "less likely first, then
    /// sure", 4 "repeats itself".
    fn trap() -> Table {
        let ln = |p: f32| p.ln();
        Table {
            rows: vec![
                vec![0.0, -9.0, -9.0, -9.0, -9.0],
                vec![ln(0.01), -9.0, ln(0.55), ln(0.43), ln(0.01)],
                vec![ln(0.34), -9.0, -9.0, -9.0, ln(0.33)],
                vec![ln(0.98), -9.0, -9.0, -9.0, ln(0.01)],
                vec![ln(0.1), -9.0, -9.0, -9.0, ln(0.9)],
            ],
        }
    }

    #[test]
    fn greedy_takes_each_maximum_and_sums_its_log_probabilities() {
        let t = trap();
        let out = generate(&t, 1, &[1], &settings(1, 10)).unwrap();
        assert_eq!(out[0].tokens, vec![1, 2, 0]);
        let want = log_prob_of(&t.rows[1], 2) + log_prob_of(&t.rows[2], 0);
        assert!((out[0].log_prob - want).abs() < 1e-4, "{}", out[0].log_prob);
    }

    #[test]
    fn beam_search_finds_the_better_sequence_greedy_misses() {
        let t = trap();
        let out = generate(&t, 1, &[1], &settings(2, 10)).unwrap();
        assert_eq!(out[0].tokens, vec![1, 3, 0]);
        // sequences_scores: summed log-probabilities over 2 generated tokens, / 2^1.
        let want = (log_prob_of(&t.rows[1], 3) + log_prob_of(&t.rows[3], 0)) / 2.0;
        assert!((out[0].log_prob - want).abs() < 1e-3, "{}", out[0].log_prob);
    }

    #[test]
    fn items_in_a_batch_finish_on_their_own() {
        // Item 1's end token gets +5: it ends at the first step; item 0 goes on.
        let t = trap();
        for beams in [1, 2] {
            let together = generate(&t, 2, &[1], &settings(beams, 10)).unwrap();
            let alone = generate(&t, 1, &[1], &settings(beams, 10)).unwrap();
            assert_eq!(together[0], alone[0], "{beams} beams");
            assert!(
                together[1].tokens.len() < together[0].tokens.len(),
                "{beams}"
            );
        }
        // The length limit cuts a sequence that would not end.
        let out = generate(&t, 1, &[1, 4], &settings(1, 4)).unwrap();
        assert_eq!(out[0].tokens.len(), 4);
    }

    #[test]
    fn processors_follow_transformers() {
        let mut s = settings(1, 10);
        s.repetition_penalty = 2.0;
        let mut scores = vec![-1.0, 2.0, 4.0, -3.0];
        process(&mut scores, &[1, 3, 3], &s);
        // Present tokens: positive divided, negative multiplied, each once.
        assert_eq!(scores, vec![-1.0, 1.0, 4.0, -6.0]);
        let mut s = settings(1, 10);
        s.no_repeat_ngram_size = 2;
        let mut scores = vec![0.0; 5];
        // "2 3" occurred after "2": 3 is barred after the final 2.
        process(&mut scores, &[1, 2, 3, 4, 2], &s);
        assert_eq!(scores[3], f32::NEG_INFINITY);
        assert_eq!(scores.iter().filter(|v| v.is_finite()).count(), 4);
        let mut s = settings(1, 10);
        s.min_length = 3;
        let mut scores = vec![0.0; 5];
        process(&mut scores, &[1, 2], &s);
        assert_eq!(scores[0], f32::NEG_INFINITY);
        let mut scores = vec![0.0; 5];
        process(&mut scores, &[1, 2, 2], &s);
        assert_eq!(scores[0], 0.0);
    }

    #[test]
    fn top_k_breaks_ties_by_position() {
        let c = |score, beam| Candidate {
            score,
            beam,
            token: 0,
        };
        let top = top_k([c(1.0, 0), c(3.0, 1), c(3.0, 2), c(2.0, 3)].into_iter(), 3);
        let order: Vec<usize> = top.iter().map(|c| c.beam).collect();
        assert_eq!(order, vec![1, 2, 3]);
    }
}
