//! `vt run --graph`: the task graph, printed instead of run — a text tree for people, or
//! DOT (`--graph=dot`) for Graphviz.

use std::fmt::Write;

use super::Graph;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Each task that nothing else waits for, above what it waits for.
    Text,
    /// Graphviz: `vt run build -r --graph=dot | dot -Tsvg > graph.svg`.
    Dot,
}

pub fn render(graph: &Graph, format: Format) -> String {
    match format {
        Format::Text => text(graph),
        Format::Dot => dot(graph),
    }
}

/// Tops first (tasks nothing waits for), each above the tasks it waits for. A task met a
/// second time is named with `(above)` instead of its subtree again, so a wide graph
/// stays as long as its edges.
fn text(graph: &Graph) -> String {
    let n = graph.nodes.len();
    let mut waited_for = vec![false; n];
    for node in &graph.nodes {
        for dep in &node.deps {
            waited_for[dep.node] = true;
        }
    }
    let mut out = String::new();
    let mut shown = vec![false; n];
    for top in (0..n).filter(|i| !waited_for[*i]) {
        subtree(graph, top, "", None, &mut shown, &mut out);
    }
    out
}

fn subtree(
    graph: &Graph,
    index: usize,
    prefix: &str,
    last: Option<bool>,
    shown: &mut [bool],
    out: &mut String,
) {
    let node = &graph.nodes[index];
    let (branch, indent) = match last {
        None => ("", String::new()),
        Some(true) => ("└── ", format!("{prefix}    ")),
        Some(false) => ("├── ", format!("{prefix}│   ")),
    };
    let again = shown[index] && !node.deps.is_empty();
    let _ = writeln!(
        out,
        "{prefix}{branch}{}{}",
        node.label,
        if again { " (above)" } else { "" }
    );
    if again {
        return;
    }
    shown[index] = true;
    for (i, dep) in node.deps.iter().enumerate() {
        let last = i + 1 == node.deps.len();
        subtree(graph, dep.node, &indent, Some(last), shown, out);
    }
}

fn dot(graph: &Graph) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = String::from("digraph vt {\n  rankdir=LR;\n");
    for node in &graph.nodes {
        let _ = writeln!(out, "  {};", quote(&node.label));
    }
    for node in &graph.nodes {
        for dep in &node.deps {
            let _ = writeln!(
                out,
                "  {} -> {} [label={}];",
                quote(&node.label),
                quote(&graph.nodes[dep.node].label),
                quote(&dep.via.to_string())
            );
        }
    }
    out.push_str("}\n");
    out
}
