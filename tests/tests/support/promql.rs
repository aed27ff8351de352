//! Just enough of Grafana's dashboard JSON and of PromQL for the dashboard check: every query
//! of a dashboard, its Grafana variables substituted, and the metric names an expression reads.

use std::collections::BTreeMap;

use serde_json::Value;

/// One PromQL expression of a panel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PanelQuery {
    /// The panel's title.
    pub(crate) panel: String,
    /// The target's refId.
    pub(crate) ref_id: String,
    /// The expression as written in the dashboard.
    pub(crate) expr: String,
}

/// A templating variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Variable {
    /// Its name (`$name` in expressions).
    pub(crate) name: String,
    /// Its type: query, datasource, interval, custom, constant, ...
    pub(crate) kind: String,
    /// The query of a `query` variable.
    pub(crate) query: Option<String>,
}

/// Every target expression of every panel, rows' nested panels included, in order.
pub(crate) fn panel_queries(dashboard: &Value) -> Result<Vec<PanelQuery>, String> {
    let panels =
        dashboard.get("panels").and_then(Value::as_array).ok_or("the dashboard has no `panels` array")?;
    let mut out = Vec::new();
    collect(panels, &mut out)?;
    Ok(out)
}

fn collect(panels: &[Value], out: &mut Vec<PanelQuery>) -> Result<(), String> {
    for panel in panels {
        let title = panel.get("title").and_then(Value::as_str).unwrap_or("(untitled)").to_string();
        if let Some(targets) = panel.get("targets") {
            let targets =
                targets.as_array().ok_or_else(|| format!("panel {title:?}: `targets` is not an array"))?;
            for target in targets {
                let ref_id = target.get("refId").and_then(Value::as_str).unwrap_or("?").to_string();
                let expr = target
                    .get("expr")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("panel {title:?} target {ref_id}: no `expr`"))?;
                out.push(PanelQuery { panel: title.clone(), ref_id, expr: expr.to_string() });
            }
        }
        if let Some(nested) = panel.get("panels").and_then(Value::as_array) {
            collect(nested, out)?;
        }
    }
    Ok(())
}

/// The dashboard's templating variables.
pub(crate) fn variables(dashboard: &Value) -> Result<Vec<Variable>, String> {
    let Some(list) = dashboard.pointer("/templating/list") else {
        return Ok(Vec::new());
    };
    let list = list.as_array().ok_or("`templating.list` is not an array")?;
    list.iter()
        .map(|v| {
            let name = v.get("name").and_then(Value::as_str).ok_or("a variable has no name")?;
            let kind = v.get("type").and_then(Value::as_str).unwrap_or("query");
            let query = match v.get("query") {
                Some(Value::String(q)) => Some(q.clone()),
                Some(q) => q.get("query").and_then(Value::as_str).map(str::to_string),
                None => None,
            };
            Ok(Variable { name: name.to_string(), kind: kind.to_string(), query })
        })
        .collect()
}

/// What each variable stands for when the check evaluates an expression: query variables
/// match everything (`.*`, their "All"), interval variables are one minute; Grafana's
/// built-in intervals are one minute (`$__rate_interval`, at least four 1 s scrapes) or the
/// scrape interval. Datasource variables have no value inside an expression.
pub(crate) fn values(variables: &[Variable]) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = [
        ("__rate_interval", "1m"),
        ("__interval", "10s"),
        ("__interval_ms", "10000"),
        ("__range", "5m"),
        ("__range_s", "300"),
        ("__range_ms", "300000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for v in variables {
        match v.kind.as_str() {
            "query" | "custom" | "textbox" | "adhoc" => {
                values.insert(v.name.clone(), ".*".into());
            }
            "interval" => {
                values.insert(v.name.clone(), "1m".into());
            }
            _ => {}
        }
    }
    values
}

/// `expr` with every `$name` and `${name}` replaced by its value; an unknown variable is an
/// error (a query that would not run in Grafana either).
pub(crate) fn substitute(expr: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or_else(|| format!("unclosed ${{ in {expr:?}"))?;
            // `${name:format}`: the format does not matter for a regex "All".
            let name = braced[..end].split(':').next().unwrap_or("");
            (name, end + 2)
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..end], end)
        };
        let value = values.get(name).ok_or_else(|| format!("unknown variable `${name}` in {expr:?}"))?;
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "days_in_month",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "time",
    "timestamp",
    "vector",
    "year",
];
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
const KEYWORDS: &[&str] = &["bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"];

/// The metric names `expr` selects, in order of appearance (a name used twice is listed
/// twice). Label matchers, strings, ranges and label lists are skipped; a function this
/// check does not know is an error, so a typo cannot pass as a metric name.
pub(crate) fn metric_names(expr: &str) -> Result<Vec<String>, String> {
    let b = expr.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => i = skip_string(b, i)?,
            b'{' => i = skip_group(b, i, b'{', b'}')?,
            b'[' => i = skip_group(b, i, b'[', b']')?,
            b'0'..=b'9' | b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                    i += 1;
                }
                let ident = &expr[start..i];
                let mut j = i;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                let next = b.get(j).copied();
                let lower = ident.to_ascii_lowercase();
                if LABEL_LISTS.contains(&lower.as_str()) {
                    if next == Some(b'(') {
                        i = skip_group(b, j, b'(', b')')?;
                    }
                } else if KEYWORDS.contains(&lower.as_str()) || AGGREGATIONS.contains(&ident) {
                    // An operator, or an aggregation (followed by `(` or by a label list).
                } else if next == Some(b'(') {
                    if !FUNCTIONS.contains(&ident) {
                        return Err(format!("unknown function `{ident}` in {expr:?}"));
                    }
                } else {
                    names.push(ident.to_string());
                }
            }
            _ => i += 1,
        }
    }
    Ok(names)
}

/// The index just past the string literal starting at `start`.
fn skip_string(b: &[u8], start: usize) -> Result<usize, String> {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\\' && quote != b'`' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            return Ok(i + 1);
        }
        i += 1;
    }
    Err("unterminated string literal".into())
}

/// The index just past the group opened at `start`, strings inside skipped.
fn skip_group(b: &[u8], start: usize, open: u8, close: u8) -> Result<usize, String> {
    let mut depth = 0;
    let mut i = start;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => {
                i = skip_string(b, i)?;
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(format!("unclosed `{}`", open as char))
}
