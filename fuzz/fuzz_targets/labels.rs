//! Arbitrary text as a label list, a labels file and a templates file; every prompt is
//! then tokenised with the tiny fixture's tokenizer.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vlm::labels::{self, PromptSet, Templates};
use vlm::tokenize::ClipTokenizer;

struct Env {
    tokenizer: ClipTokenizer,
    dir: tempfile::TempDir,
}

fn env() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/models/tiny-quickgelu/tokenizer.json");
        Env {
            tokenizer: ClipTokenizer::from_file(&path, 77).expect("fixture tokenizer loads"),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let env = env();
    let text = String::from_utf8_lossy(data);
    // The first line is a template set, the rest a comma list; the whole text is also a
    // labels file and a templates file.
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let file = env.dir.path().join("input.txt");
    std::fs::write(&file, data).expect("write temp file");
    let from_file = labels::read_file(&file);
    let templates = Templates::from_arg(&file.to_string_lossy());
    let templates = match templates {
        Ok(t) => t,
        Err(_) => match vlm::labels::Template::new(first) {
            Ok(t) => Templates::single(t),
            Err(_) => Templates::single(Default::default()),
        },
    };
    for list in [labels::parse_list(rest), from_file].into_iter().flatten() {
        let Ok(set) = PromptSet::new(&list, &templates) else {
            continue;
        };
        assert_eq!(set.classes.len(), list.len());
        assert_eq!(
            set.ranges.iter().map(|r| r.len()).sum::<usize>(),
            set.prompts.len()
        );
        for class in 0..set.classes.len() {
            let _ = set.first_prompt(class);
        }
        // Bounded work per input: tokenise at most a few prompts.
        for prompt in set.prompts.iter().take(8) {
            if let Ok(tokens) = env.tokenizer.encode(prompt) {
                assert!(!tokens.ids.is_empty() && tokens.ids.len() <= 77);
            }
        }
    }
});
