use super::*;

#[test]
fn blocked_all_pairs_equal_the_brute_force_reference() {
    // More rows than one block of columns and than one pass of rows, odd dimension.
    let rows = UnitRows::new(&synthetic_clusters(ROWS + BLOCK / 2 + 7, 23, 0.35, 7)).unwrap();
    let all = pairs_brute_force(&rows, 0.8).unwrap();
    for threshold in [0.8f32, 0.88, 0.93] {
        let exact = pairs_exact(&rows, threshold).unwrap();
        let reference: Vec<Pair> = all
            .iter()
            .filter(|p| p.similarity >= threshold)
            .copied()
            .collect();
        assert!(
            reference.len() > 100,
            "{threshold}: {} pairs",
            reference.len()
        );
        // f32 products may put a pair within rounding of the threshold on either side.
        let near = |p: &Pair| (p.similarity - threshold).abs() < 1e-5;
        let key = |p: &Pair| (p.a, p.b);
        let exact_keys: Vec<_> = exact.iter().filter(|p| !near(p)).map(key).collect();
        let reference_keys: Vec<_> = reference.iter().filter(|p| !near(p)).map(key).collect();
        assert_eq!(exact_keys, reference_keys, "threshold {threshold}");
        for p in &exact {
            assert!(p.a < p.b);
            assert!((p.similarity - rows.similarity(p.a, p.b)).abs() < 1e-5);
        }
    }
}

#[test]
fn groups_are_linked_pairs_in_input_order() {
    // 0 ~ 2 ~ 4 chain (0 and 4 further apart), 1 ~ 3, 5 alone.
    let rows = UnitRows::new(&[
        vec![1.0, 0.0, 0.0],
        vec![0.0, 1.0, 0.0],
        vec![1.0, 0.3, 0.0],
        vec![0.0, 1.0, 0.1],
        vec![1.0, 0.6, 0.0],
        vec![0.0, 0.0, 1.0],
    ])
    .unwrap();
    let pairs = pairs_exact(&rows, 0.94).unwrap();
    let groups = groups(&rows, &pairs);
    let members: Vec<Vec<usize>> = groups
        .iter()
        .map(|g| g.members.iter().map(|m| m.0).collect())
        .collect();
    assert_eq!(members, [vec![0, 2, 4], vec![1, 3]]);
    assert_eq!(groups[0].members[0].1, 1.0);
    // 4 joined through 2 and sits below the threshold to the first image.
    let to_first = groups[0].members[2].1;
    assert!((to_first - rows.similarity(0, 4)).abs() < 1e-7 && to_first < 0.94);
    let names: Vec<String> = (0..6).map(|i| format!("img {i}.jpg")).collect();
    let mut out = Vec::new();
    write_groups(&mut out, Format::Jsonl, &records(&groups, &names)).unwrap();
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8(out).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["group"], 1);
    assert_eq!(first["members"][1]["path"], "img 2.jpg");
}

#[test]
fn bad_settings_are_refused() {
    let rows = UnitRows::new(&[vec![1.0, 0.0]]).unwrap();
    assert!(matches!(
        pairs_exact(&rows, 1.5),
        Err(DedupError::Threshold(_))
    ));
    assert!(matches!(
        UnitRows::new(&[vec![1.0, 0.0], vec![1.0]]),
        Err(DedupError::Dimension { index: 1, .. })
    ));
    // A zero embedding is similar to nothing, not a NaN that poisons the groups.
    let rows = UnitRows::new(&[vec![0.0, 0.0], vec![0.0, 0.0], vec![1.0, 0.0]]).unwrap();
    assert!(pairs_exact(&rows, 0.5).unwrap().is_empty());
}
