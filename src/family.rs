//! Model families: which architecture a checkpoint is, and how its scores are computed.
//!
//! A family is detected from the checkpoint's files ([`crate::model::config::ClipConfig`] reads it
//! from `config.json`'s `model_type`, or from the presence of `open_clip_config.json`),
//! never guessed from token ids. Everything that differs between families (text pooling,
//! tokenizer padding and cleaning, preprocessing defaults, scoring) hangs off it.

use std::fmt;

/// A family of image-text checkpoints that vlm can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// OpenAI-style CLIP in the Hugging Face layout (`model_type: "clip"`).
    Clip,
    /// SigLIP and SigLIP 2 fixed-resolution (`model_type: "siglip"`): sigmoid-trained.
    Siglip,
    /// MetaCLIP 2 (`model_type: "metaclip_2"`): CLIP towers, first-EOS pooling.
    MetaClip2,
    /// open_clip's own layout (`open_clip_config.json`), plain-ViT towers.
    OpenClip,
}

impl Family {
    /// Every family, in the order `vlm models` lists them.
    pub const ALL: [Family; 4] = [
        Family::Clip,
        Family::Siglip,
        Family::MetaClip2,
        Family::OpenClip,
    ];

    /// The name used in registry files, outputs and cache keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::Clip => "clip",
            Self::Siglip => "siglip",
            Self::MetaClip2 => "metaclip_2",
            Self::OpenClip => "open_clip",
        }
    }

    /// Parses [`Self::name`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// How the family's zero-shot scores are computed: the scoring it was trained with,
    /// which is what its reference pipeline reports.
    pub fn scoring(self) -> Scoring {
        match self {
            Self::Siglip => Scoring::Sigmoid,
            Self::Clip | Self::MetaClip2 | Self::OpenClip => Scoring::Softmax,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How logits become the reported probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scoring {
    /// `softmax(exp(logit_scale) * cos)` over the labels: the labels share one unit of
    /// probability, so a value says how much a label beats the others given.
    Softmax,
    /// `sigmoid(exp(logit_scale) * cos + logit_bias)` per label, independently: a value is
    /// the model's belief that this label matches, whatever the other labels are. The
    /// values do not sum to one, and all may be small.
    Sigmoid,
}

impl Scoring {
    /// `softmax` or `sigmoid`, as written in every output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Softmax => "softmax",
            Self::Sigmoid => "sigmoid",
        }
    }
}

impl fmt::Display for Scoring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_scoring_follows_training() {
        for family in Family::ALL {
            assert_eq!(Family::parse(family.name()), Some(family));
        }
        assert_eq!(Family::parse("siglip2"), None);
        assert_eq!(Family::Siglip.scoring(), Scoring::Sigmoid);
        assert_eq!(Family::OpenClip.scoring(), Scoring::Softmax);
        assert_eq!(Family::MetaClip2.scoring().to_string(), "softmax");
    }
}
