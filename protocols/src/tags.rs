//! Member tags (issue 15): the key/value pairs a member advertises beside its topics in its
//! SWIM meta (`role=web`, `dc=eu1`), and the scopes that select members by them, as Serf's
//! `members -tag` and query filters do.
//!
//! A [`TagScope`] is a list of `KEY=PATTERN` terms; a member is in scope when, for every term,
//! it has the tag `KEY` and its value matches `PATTERN` as a whole (the regex is anchored:
//! `web` matches `web` only, `web.*` matches `web` and `web-2`). Scopes travel in aggregation
//! queries, so every bound is checked before a pattern is compiled: at most
//! [`SCOPE_TERMS_MAX`] terms, patterns of at most [`SCOPE_PATTERN_MAX`] bytes, and compiled
//! programs of at most [`SCOPE_REGEX_BYTES`] bytes (the `regex` crate matches in linear time
//! whatever the pattern, so a hostile pattern costs at most its compile, bounded by these).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The most tags a member may advertise.
pub const TAGS_MAX: usize = 16;
/// The longest tag key, in bytes.
pub const TAG_KEY_MAX: usize = 64;
/// The most bytes of keys and values together a member may advertise. With 64 topics and a
/// 64-byte name a signed `Alive` carrying them (IPv6 address) is 1,122 bytes, so it still rides a
/// 1200-byte SWIM datagram.
pub const TAGS_BYTES_MAX: usize = 256;
/// The most terms a scope may have.
pub const SCOPE_TERMS_MAX: usize = 4;
/// The longest pattern of a scope term, in bytes.
pub const SCOPE_PATTERN_MAX: usize = 128;
/// The largest compiled program of one scope pattern, in bytes (the `regex` crate's
/// `size_limit` and `dfa_size_limit`).
pub const SCOPE_REGEX_BYTES: usize = 1 << 16;

/// Why tags were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TagError {
    /// More than [`TAGS_MAX`] tags.
    #[error("{0} tags: at most {TAGS_MAX} are allowed")]
    TooMany(usize),
    /// Keys and values together exceed [`TAGS_BYTES_MAX`] bytes.
    #[error("tags of {0} bytes (keys and values together): at most {TAGS_BYTES_MAX} are allowed")]
    TooLarge(usize),
    /// A key that is empty, longer than [`TAG_KEY_MAX`] bytes, or has a character outside
    /// `A-Z a-z 0-9 _ . - /`.
    #[error("tag key `{0}`: 1 to {TAG_KEY_MAX} characters from A-Z a-z 0-9 _ . - /")]
    BadKey(String),
    /// A value with a control character.
    #[error("value of tag `{0}` has a control character")]
    BadValue(String),
    /// Not of the form `KEY=VALUE`.
    #[error("`{0}` is not KEY=VALUE")]
    NotKeyValue(String),
}

/// A member's tags: keys ascending and unique, within [`TAGS_MAX`] and [`TAGS_BYTES_MAX`].
/// Decoded tags from the network are checked with [`Tags::is_valid`] (the member meta does).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tags(Vec<(String, String)>);

fn key_ok(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= TAG_KEY_MAX
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'))
}

/// Split `KEY=VALUE` at its first `=`.
pub fn split_key_value(s: &str) -> Result<(String, String), TagError> {
    let (k, v) = s.split_once('=').ok_or_else(|| TagError::NotKeyValue(s.to_string()))?;
    Ok((k.to_string(), v.to_string()))
}

impl Tags {
    /// Tags from a map, checked.
    pub fn new(map: BTreeMap<String, String>) -> Result<Self, TagError> {
        let tags = Tags(map.into_iter().collect());
        tags.check()?;
        Ok(tags)
    }

    /// Parse `KEY=VALUE` strings (a later one of the same key wins), checked.
    pub fn parse<S: AsRef<str>>(pairs: &[S]) -> Result<Self, TagError> {
        let mut map = BTreeMap::new();
        for p in pairs {
            let (k, v) = split_key_value(p.as_ref())?;
            map.insert(k, v);
        }
        Tags::new(map)
    }

    /// These tags with `set` added or replaced and `delete` removed, checked.
    pub fn with_changes(&self, set: &BTreeMap<String, String>, delete: &[String]) -> Result<Self, TagError> {
        let mut map = self.to_map();
        for k in delete {
            map.remove(k);
        }
        for (k, v) in set {
            map.insert(k.clone(), v.clone());
        }
        Tags::new(map)
    }

    fn check(&self) -> Result<(), TagError> {
        if self.0.len() > TAGS_MAX {
            return Err(TagError::TooMany(self.0.len()));
        }
        let mut bytes = 0usize;
        for (k, v) in &self.0 {
            if !key_ok(k) {
                return Err(TagError::BadKey(k.clone()));
            }
            if v.chars().any(char::is_control) {
                return Err(TagError::BadValue(k.clone()));
            }
            bytes = bytes.saturating_add(k.len()).saturating_add(v.len());
        }
        if bytes > TAGS_BYTES_MAX {
            return Err(TagError::TooLarge(bytes));
        }
        if !self.0.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(TagError::BadKey(String::from("(duplicate or unordered)")));
        }
        Ok(())
    }

    /// True if within every bound (keys ascending and unique).
    pub fn is_valid(&self) -> bool {
        self.check().is_ok()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| self.0[i].1.as_str())
    }

    /// (key, value) pairs, keys ascending.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The tags as a map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.iter().cloned().collect()
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a scope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// More than [`SCOPE_TERMS_MAX`] terms.
    #[error("{0} tag terms: at most {SCOPE_TERMS_MAX} are allowed")]
    TooManyTerms(usize),
    /// A key that no tag could have.
    #[error("tag key `{0}`: 1 to {TAG_KEY_MAX} characters from A-Z a-z 0-9 _ . - /")]
    BadKey(String),
    /// A pattern longer than [`SCOPE_PATTERN_MAX`] bytes.
    #[error("pattern for tag `{0}` is longer than {SCOPE_PATTERN_MAX} bytes")]
    PatternTooLong(String),
    /// The pattern is not a regex, or compiles to more than [`SCOPE_REGEX_BYTES`].
    #[error("pattern for tag `{key}` is not a usable regex: {reason}")]
    BadPattern {
        /// The tag key.
        key: String,
        /// The regex crate's message.
        reason: String,
    },
    /// Not of the form `KEY=PATTERN`.
    #[error("`{0}` is not KEY=PATTERN")]
    NotKeyValue(String),
}

/// Which members a query or a listing is about: every term `KEY=PATTERN` must match (the tag
/// present, its value matching the anchored regex). Empty: every member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TagScope(Vec<(String, String)>);

impl TagScope {
    /// A scope of `(key, pattern)` terms, sorted; every bound checked and every pattern compiled.
    pub fn new(mut terms: Vec<(String, String)>) -> Result<Self, ScopeError> {
        terms.sort();
        terms.dedup();
        let scope = TagScope(terms);
        scope.matcher()?;
        Ok(scope)
    }

    /// Parse `KEY=PATTERN` strings.
    pub fn parse<S: AsRef<str>>(terms: &[S]) -> Result<Self, ScopeError> {
        let mut v = Vec::with_capacity(terms.len());
        for t in terms {
            let (k, p) =
                t.as_ref().split_once('=').ok_or_else(|| ScopeError::NotKeyValue(t.as_ref().to_string()))?;
            v.push((k.to_string(), p.to_string()));
        }
        TagScope::new(v)
    }

    /// Check the bounds that need no compile: term count, keys, pattern lengths.
    pub fn validate(&self) -> Result<(), ScopeError> {
        if self.0.len() > SCOPE_TERMS_MAX {
            return Err(ScopeError::TooManyTerms(self.0.len()));
        }
        for (k, p) in &self.0 {
            if !key_ok(k) {
                return Err(ScopeError::BadKey(k.clone()));
            }
            if p.len() > SCOPE_PATTERN_MAX {
                return Err(ScopeError::PatternTooLong(k.clone()));
            }
        }
        Ok(())
    }

    /// Compile the scope (after [`TagScope::validate`]).
    pub fn matcher(&self) -> Result<TagMatcher, ScopeError> {
        self.validate()?;
        let mut terms = Vec::with_capacity(self.0.len());
        for (k, p) in &self.0 {
            let re = regex::RegexBuilder::new(&format!("^(?:{p})$"))
                .size_limit(SCOPE_REGEX_BYTES)
                .dfa_size_limit(SCOPE_REGEX_BYTES)
                .nest_limit(32)
                .build()
                .map_err(|e| ScopeError::BadPattern { key: k.clone(), reason: e.to_string() })?;
            terms.push((k.clone(), re));
        }
        Ok(TagMatcher(terms))
    }

    /// The terms, (key, pattern), sorted.
    pub fn terms(&self) -> &[(String, String)] {
        &self.0
    }

    /// True if the scope selects every member.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A compiled [`TagScope`].
#[derive(Clone, Debug)]
pub struct TagMatcher(Vec<(String, regex::Regex)>);

impl TagMatcher {
    /// True if `tags` has every term's key with a value its pattern matches as a whole.
    pub fn matches(&self, tags: &Tags) -> bool {
        self.0.iter().all(|(k, re)| tags.get(k).is_some_and(|v| re.is_match(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[&str]) -> Tags {
        Tags::parse(pairs).expect("valid tags")
    }

    #[test]
    fn a_scope_matches_whole_values_only() {
        let scope = TagScope::parse(&["role=web"]).unwrap().matcher().unwrap();
        assert!(scope.matches(&tags(&["role=web", "dc=eu"])));
        assert!(!scope.matches(&tags(&["role=webserver"])));
        assert!(!scope.matches(&tags(&["dc=eu"])));
        let re = TagScope::parse(&["role=web.*", "dc=eu|us"]).unwrap().matcher().unwrap();
        assert!(re.matches(&tags(&["role=web-2", "dc=us"])));
        assert!(!re.matches(&tags(&["role=web-2", "dc=ap"])));
    }

    #[test]
    fn tags_beyond_their_bounds_are_refused_with_the_limit() {
        let many: Vec<String> = (0..=TAGS_MAX).map(|i| format!("k{i}=v")).collect();
        assert_eq!(Tags::parse(&many), Err(TagError::TooMany(TAGS_MAX + 1)));
        let big = format!("k={}", "x".repeat(TAGS_BYTES_MAX));
        assert_eq!(Tags::parse(&[big]), Err(TagError::TooLarge(TAGS_BYTES_MAX + 1)));
        assert!(matches!(Tags::parse(&["bad key=v"]), Err(TagError::BadKey(_))));
        assert!(matches!(Tags::parse(&["novalue"]), Err(TagError::NotKeyValue(_))));
        let t =
            tags(&["a=1"]).with_changes(&BTreeMap::from([("b".into(), "2".into())]), &["a".into()]).unwrap();
        assert_eq!(t, tags(&["b=2"]));
    }

    #[test]
    fn hostile_scopes_are_refused_before_or_at_compile() {
        let many: Vec<String> = (0..=SCOPE_TERMS_MAX).map(|i| format!("k{i}=v")).collect();
        assert_eq!(TagScope::parse(&many), Err(ScopeError::TooManyTerms(SCOPE_TERMS_MAX + 1)));
        let long = format!("k={}", "a".repeat(SCOPE_PATTERN_MAX + 1));
        assert!(matches!(TagScope::parse(&[long]), Err(ScopeError::PatternTooLong(_))));
        assert!(matches!(TagScope::parse(&["k=("]), Err(ScopeError::BadPattern { .. })));
        // Small to write, huge to compile: refused by the size limit.
        assert!(matches!(TagScope::parse(&["k=\\w{1000}\\w{1000}"]), Err(ScopeError::BadPattern { .. })));
        // A forged scope (never through `new`) is caught by `matcher`.
        let forged: TagScope = TagScope(vec![("k".into(), "x".repeat(SCOPE_PATTERN_MAX + 1))]);
        assert!(forged.matcher().is_err());
    }
}
