//! Every TOML example in `docs/identity.md` and `docs/kubernetes.md` is a valid configuration
//! (what `airgate check` accepts).

#[test]
fn every_identity_doc_example_is_a_valid_configuration() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/identity.md")).unwrap();
    let mut blocks = Vec::new();
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").unwrap();
        blocks.push(&body[..end]);
        rest = &body[end + 3..];
    }
    assert!(blocks.len() >= 4, "found {} examples", blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        if let Err(p) = airgate::config::parse(block) {
            panic!("example {i} of docs/identity.md is invalid:\n{p}\n{block}");
        }
    }
}

#[test]
fn every_kubernetes_doc_example_is_a_valid_configuration() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/kubernetes.md")).unwrap();
    let blocks: Vec<&str> = doc.split("```toml\n").skip(1).map(|b| b.split("```").next().unwrap()).collect();
    assert!(blocks.len() >= 2, "found {} examples", blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        if let Err(p) = airgate::config::parse(block) {
            panic!("example {i} of docs/kubernetes.md is invalid:\n{p}\n{block}");
        }
    }
}
