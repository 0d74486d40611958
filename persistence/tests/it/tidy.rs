//! Checks on the suite itself.

use std::collections::BTreeMap;
use std::path::Path;

/// Every method of every table trait (`src/tables/*.rs`) is called directly on a
/// transaction in the contract suite (`tests/it/contract/*.rs`), so each runs on both
/// backends through `store_contract_tests!`. A call counts when its receiver is a
/// transaction binding of the suite's convention: `tx`, `rtx`, `w`, `r` or `theirs`.
#[test]
fn every_table_method_has_a_direct_contract_test() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read_dir = |dir: &str| -> anyhow::Result<String> {
        let mut all = String::new();
        let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        paths.sort();
        for p in paths {
            all.push_str(&std::fs::read_to_string(p)?);
        }
        Ok(all)
    };
    let tables = read_dir("src/tables")?;
    let suite = read_dir("tests/it/contract")?;
    let suite: String = suite.split_whitespace().collect();

    // trait name -> its methods
    let mut traits: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in tables.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("pub trait ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            traits.entry(name.clone()).or_default();
            current = Some(name);
        } else if line.starts_with('}') {
            current = None;
        } else if let (Some(name), Some(rest)) = (&current, t.strip_prefix("async fn ")) {
            let method: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            traits.entry(name.clone()).or_default().push(method);
        }
    }
    anyhow::ensure!(traits.len() >= 30, "table traits found: {}", traits.len());
    let mut missing = Vec::new();
    for (name, methods) in &traits {
        anyhow::ensure!(
            methods.len() <= 12,
            "{name} has {} methods: split it",
            methods.len()
        );
        for m in methods {
            let called = ["tx", "rtx", "w", "r", "theirs"]
                .iter()
                .any(|rx| suite.contains(&format!("{rx}.{m}(")));
            if !called {
                missing.push(format!("{name}::{m}"));
            }
        }
    }
    anyhow::ensure!(
        missing.is_empty(),
        "table methods without a direct contract test: {missing:?}"
    );
    Ok(())
}
