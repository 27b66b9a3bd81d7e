//! The keys Godwit understands, as a tree, and the walk that turns every other key into a
//! warning naming it and its line.

use toml::de::{DeTable, DeValue};

/// What may appear at one place of the file.
#[derive(Debug)]
enum Node {
    /// A value whose inside is not walked (strings, numbers, string lists).
    Leaf,
    /// A table with these keys.
    Table(&'static [(&'static str, &'static Node)]),
    /// A table with user-chosen keys, each holding this.
    AnyKeys(&'static Node),
    /// An array (of tables) whose elements hold this.
    Array(&'static Node),
}

static LEAF: Node = Node::Leaf;

static SERVICE_CHECK: Node = Node::Table(&[
    ("interval", &LEAF),
    ("timeout", &LEAF),
    ("grace_period", &LEAF),
    ("method", &LEAF),
    ("path", &LEAF),
]);
static SERVICE_CHECKS: Node = Node::Array(&SERVICE_CHECK);

static CONCURRENCY: Node = Node::Table(&[
    ("type", &LEAF),
    ("soft_limit", &LEAF),
    ("hard_limit", &LEAF),
]);

static PROXY_PROTO_OPTIONS: Node = Node::Table(&[("version", &LEAF)]);
static HTTP_OPTIONS: Node = Node::Table(&[("h2_backend", &LEAF)]);

static PORT: Node = Node::Table(&[
    ("port", &LEAF),
    ("handlers", &LEAF),
    ("force_https", &LEAF),
    ("proxy_proto_options", &PROXY_PROTO_OPTIONS),
    ("http_options", &HTTP_OPTIONS),
]);
static PORTS: Node = Node::Array(&PORT);

static HTTP_SERVICE: Node = Node::Table(&[
    ("internal_port", &LEAF),
    ("force_https", &LEAF),
    ("auto_stop_machines", &LEAF),
    ("auto_start_machines", &LEAF),
    ("min_machines_running", &LEAF),
    ("processes", &LEAF),
    ("concurrency", &CONCURRENCY),
    ("checks", &SERVICE_CHECKS),
    ("http_options", &HTTP_OPTIONS),
]);

static SERVICE: Node = Node::Table(&[
    ("protocol", &LEAF),
    ("internal_port", &LEAF),
    ("auto_stop_machines", &LEAF),
    ("auto_start_machines", &LEAF),
    ("min_machines_running", &LEAF),
    ("ports", &PORTS),
    ("concurrency", &CONCURRENCY),
    ("tcp_checks", &SERVICE_CHECKS),
    ("http_checks", &SERVICE_CHECKS),
    ("processes", &LEAF),
]);
static SERVICES: Node = Node::Array(&SERVICE);

static TOP_CHECK: Node = Node::Table(&[
    ("port", &LEAF),
    ("type", &LEAF),
    ("interval", &LEAF),
    ("timeout", &LEAF),
    ("grace_period", &LEAF),
    ("method", &LEAF),
    ("path", &LEAF),
    ("processes", &LEAF),
]);
static TOP_CHECKS: Node = Node::AnyKeys(&TOP_CHECK);

static VM: Node = Node::Table(&[
    ("size", &LEAF),
    ("memory", &LEAF),
    ("memory_mb", &LEAF),
    ("cpus", &LEAF),
    ("cpu_kind", &LEAF),
    ("processes", &LEAF),
]);
static VMS: Node = Node::Array(&VM);

static RESTART: Node = Node::Table(&[("policy", &LEAF), ("retries", &LEAF), ("processes", &LEAF)]);
static RESTARTS: Node = Node::Array(&RESTART);

static BUILD: Node = Node::Table(&[("image", &LEAF)]);
static DEPLOY: Node = Node::Table(&[("strategy", &LEAF), ("wait_timeout", &LEAF)]);
static EXPERIMENTAL: Node = Node::Table(&[("cmd", &LEAF), ("entrypoint", &LEAF), ("exec", &LEAF)]);
static ANY_LEAVES: Node = Node::AnyKeys(&LEAF);

static ROOT: Node = Node::Table(&[
    ("app", &LEAF),
    ("primary_region", &LEAF),
    ("kill_signal", &LEAF),
    ("kill_timeout", &LEAF),
    ("build", &BUILD),
    ("deploy", &DEPLOY),
    ("env", &ANY_LEAVES),
    ("processes", &ANY_LEAVES),
    ("http_service", &HTTP_SERVICE),
    ("services", &SERVICES),
    ("checks", &TOP_CHECKS),
    ("vm", &VMS),
    ("restart", &RESTARTS),
    ("experimental", &EXPERIMENTAL),
]);

/// Walks the parsed document and returns one warning per key Godwit does not support.
/// Warnings are sorted by line.
pub(super) fn unsupported_keys(root: &DeTable<'_>, source: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    walk_table(root, &ROOT, "", source, &mut warnings);
    warnings.sort_by_key(|(line, _)| *line);
    warnings.into_iter().map(|(_, w)| w).collect()
}

fn walk_table(
    table: &DeTable<'_>,
    node: &Node,
    path: &str,
    source: &str,
    warnings: &mut Vec<(usize, String)>,
) {
    for (key, value) in table.iter() {
        let name: &str = key.get_ref();
        let full = if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        };
        let child = match node {
            Node::Table(keys) => keys.iter().find(|(k, _)| *k == name).map(|(_, n)| *n),
            Node::AnyKeys(inner) => Some(*inner),
            Node::Leaf | Node::Array(_) => return,
        };
        match child {
            Some(child) => walk_value(value.get_ref(), child, &full, source, warnings),
            None => {
                let line = super::line_col(source, key.span().start).0;
                warnings.push((
                    line,
                    format!("unsupported key \"{full}\" (line {line}): ignored"),
                ));
            }
        }
    }
}

fn walk_value(
    value: &DeValue<'_>,
    node: &Node,
    path: &str,
    source: &str,
    warnings: &mut Vec<(usize, String)>,
) {
    match (node, value) {
        (Node::Table(_) | Node::AnyKeys(_), DeValue::Table(table)) => {
            walk_table(table, node, path, source, warnings);
        }
        (Node::Array(inner), DeValue::Array(items)) => {
            for (idx, item) in items.iter().enumerate() {
                walk_value(
                    item.get_ref(),
                    inner,
                    &format!("{path}[{idx}]"),
                    source,
                    warnings,
                );
            }
        }
        // Leaves, and type mismatches (which the typed parse reports as errors).
        _ => {}
    }
}
