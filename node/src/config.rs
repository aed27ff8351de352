//! The agent's configuration: a TOML file with the same keys as the command-line flags;
//! flags win over the file, the file over the defaults.
//!
//! ```toml
//! name = "n1"
//! bind = "0.0.0.0:7946"
//! advertise = "10.0.0.7:7946" # what others dial (default: the bind address)
//! join = ["10.0.0.5:7946"]
//! api = "127.0.0.1:7070"
//! secret_file = "/etc/hearsay/cluster.key"
//! data_dir = "/var/lib/hearsay"
//! preset = "lan"            # lan | wan | local (memberlist's timing presets)
//! log = "info"
//! max_message_bytes = 262144 # largest message body a publish here may carry
//! api_token_file = "/etc/hearsay/api.token" # required when `api` is not a loopback address
//! max_subscriptions = 256   # subscriptions the API serves at once
//! ```
//!
//! Without `data_dir` a node keeps its key and store in `/var/lib/hearsay/NAME` when run as
//! root, else in `$XDG_STATE_HOME/hearsay/NAME` (by default `~/.local/state/hearsay/NAME`): never
//! relative to the working directory, so starting the agent elsewhere does not silently make a
//! new identity.
//!
//! Unknown keys are an error (a typo must not be silently ignored), and so is every value that
//! cannot work: [`FileConfig::resolve`] checks each setting and the Engine's settings of the
//! preset ([`EngineConfig::validate`]), and the error names the key and its flag.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hearsay_overlay::swim::SwimConfig;
use serde::{Deserialize, Serialize};

use crate::engine::{self, EngineConfig};

/// Timing presets, after memberlist's configurations (PROTOCOLS.md §6.13).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// memberlist's DefaultLANConfig: probe every 1 s.
    #[default]
    Lan,
    /// memberlist's DefaultWANConfig: probe every 5 s.
    Wan,
    /// memberlist's DefaultLocalConfig: probe every 1 s, short timeouts (one machine).
    Local,
}

impl Preset {
    /// The config-file spelling.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Lan => "lan",
            Preset::Wan => "wan",
            Preset::Local => "local",
        }
    }

    /// The Engine's settings: the daemon's defaults on this SWIM timing.
    pub fn engine_config(self) -> EngineConfig {
        let swim = match self {
            Preset::Lan => SwimConfig::lan(),
            Preset::Wan => SwimConfig::wan(),
            Preset::Local => SwimConfig::local(),
        };
        EngineConfig::with_swim(swim)
    }
}

/// The file form: every key optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Node name shown in member lists.
    pub name: Option<String>,
    /// UDP address for QUIC.
    pub bind: Option<SocketAddr>,
    /// Address other nodes should use to reach this one.
    pub advertise: Option<SocketAddr>,
    /// Seed addresses.
    pub join: Option<Vec<SocketAddr>>,
    /// Local API address.
    pub api: Option<SocketAddr>,
    /// Cluster secret file.
    pub secret_file: Option<PathBuf>,
    /// Where the node key lives.
    pub data_dir: Option<PathBuf>,
    /// Timing preset.
    pub preset: Option<Preset>,
    /// Log filter (tracing's `EnvFilter` syntax).
    pub log: Option<String>,
    /// When the store syncs writes: `always` or `batch`.
    pub sync: Option<crate::store::Sync>,
    /// Messages kept per topic.
    pub retain_messages: Option<u64>,
    /// Payload bytes kept per topic (`256MiB`, `1GB`, a number of bytes).
    pub retain_bytes: Option<String>,
    /// How long messages are kept (`30s`, `15m`, `12h`, `7d`).
    pub retain_age: Option<String>,
    /// The largest message body a publish on this node may carry, in bytes.
    pub max_message_bytes: Option<usize>,
    /// Tags this node advertises, `{ role = "web" }` (flags' `--tag` add to and override them).
    pub tags: Option<std::collections::BTreeMap<String, String>>,
    /// A shell command run for each event, the event's JSON on its stdin.
    pub event_handler: Option<String>,
    /// A file holding the API's token (clients send it as `Authorization: Bearer`).
    pub api_token_file: Option<PathBuf>,
    /// Subscriptions the API serves at once.
    pub max_subscriptions: Option<usize>,
}

/// The resolved configuration of an agent.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// Node name shown in member lists.
    pub name: String,
    /// UDP address for QUIC.
    pub bind: SocketAddr,
    /// Address other nodes should use to reach this one (None: derived from the bind address).
    pub advertise: Option<SocketAddr>,
    /// Seed addresses (empty: start a new cluster).
    pub join: Vec<SocketAddr>,
    /// Local API address.
    pub api: SocketAddr,
    /// Cluster secret file.
    pub secret_file: PathBuf,
    /// Where the node key lives.
    pub data_dir: PathBuf,
    /// Timing preset.
    pub preset: Preset,
    /// Log filter.
    pub log: String,
    /// When the store syncs writes.
    pub sync: crate::store::Sync,
    /// What the store keeps per topic.
    pub retention: crate::store::Retention,
    /// The largest message body a publish on this node may carry, in bytes (1 to
    /// [`MAX_BODY_LIMIT`](crate::message::MAX_BODY_LIMIT); default
    /// [`MAX_BODY`](crate::message::MAX_BODY)).
    pub max_message_bytes: usize,
    /// The tags this node advertises at start.
    pub tags: hearsay_protocols::tags::Tags,
    /// The event handler command, if any.
    pub event_handler: Option<String>,
    /// A file holding the API's token; required when `api` is not a loopback address.
    pub api_token_file: Option<PathBuf>,
    /// Subscriptions the API serves at once (at least 1; default
    /// [`MAX_SUBSCRIPTIONS`](crate::api::server::MAX_SUBSCRIPTIONS)).
    pub max_subscriptions: usize,
}

/// A key of the config file; its flag is `--` and the key with `-` for `_`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key(pub &'static str);

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` (--{})", self.0, self.0.replace('_', "-"))
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The file is not valid TOML for these keys (toml's message names the key).
    #[error("config file {0}: {1}")]
    Parse(PathBuf, String),
    /// A required setting is missing.
    #[error("{key} is not set: {hint}")]
    Missing {
        /// The key.
        key: Key,
        /// What to do.
        hint: &'static str,
    },
    /// A setting has a value that cannot work.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key.
        key: Key,
        /// Why, with the value.
        reason: String,
    },
    /// The Engine's settings of the preset cannot work.
    #[error("{key} = {preset}: {source}", key = Key("preset"), preset = .preset.name())]
    Engine {
        /// The preset.
        preset: Preset,
        /// The machine and the setting.
        source: engine::ConfigError,
    },
}

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key: Key(key), reason }
}

/// An address to dial: a port, and for one others dial, a specific IP.
fn dialable(key: &'static str, addr: SocketAddr, others: bool) -> Result<SocketAddr, ConfigError> {
    if addr.port() == 0 || (others && addr.ip().is_unspecified()) {
        return Err(invalid(key, format!("{addr} cannot be dialled: give a specific IP address and a port")));
    }
    Ok(addr)
}

impl FileConfig {
    /// Read and parse a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io(path.to_owned(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_owned(), e.to_string()))
    }

    /// Keys set in `flags` replace those of `self`.
    pub fn overridden_by(self, flags: FileConfig) -> FileConfig {
        FileConfig {
            name: flags.name.or(self.name),
            bind: flags.bind.or(self.bind),
            advertise: flags.advertise.or(self.advertise),
            join: flags.join.filter(|j| !j.is_empty()).or(self.join),
            api: flags.api.or(self.api),
            secret_file: flags.secret_file.or(self.secret_file),
            data_dir: flags.data_dir.or(self.data_dir),
            preset: flags.preset.or(self.preset),
            log: flags.log.or(self.log),
            sync: flags.sync.or(self.sync),
            retain_messages: flags.retain_messages.or(self.retain_messages),
            retain_bytes: flags.retain_bytes.or(self.retain_bytes),
            retain_age: flags.retain_age.or(self.retain_age),
            max_message_bytes: flags.max_message_bytes.or(self.max_message_bytes),
            tags: match (self.tags, flags.tags) {
                (Some(mut file), Some(flags)) => {
                    file.extend(flags);
                    Some(file)
                }
                (file, flags) => flags.or(file),
            },
            event_handler: flags.event_handler.or(self.event_handler),
            api_token_file: flags.api_token_file.or(self.api_token_file),
            max_subscriptions: flags.max_subscriptions.or(self.max_subscriptions),
        }
    }

    /// Fill in defaults and check every setting; the first that cannot work is the error,
    /// naming its key.
    pub fn resolve(self) -> Result<AgentConfig, ConfigError> {
        let bind = self.bind.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7946)));
        let name = self.name.unwrap_or_else(|| format!("node-{}", bind.port()));
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(invalid("name", format!("`{name}` must be 1 to 64 printable characters")));
        }
        let advertise = self.advertise.map(|a| dialable("advertise", a, true)).transpose()?;
        let seeds = self.join.unwrap_or_default().into_iter();
        let join = seeds.map(|s| dialable("join", s, false)).collect::<Result<_, _>>()?;
        let secret_file = self.secret_file.ok_or(ConfigError::Missing {
            key: Key("secret_file"),
            hint: "no cluster secret: pass --secret-file FILE (make one with `hearsay keygen --out FILE`)",
        })?;
        if secret_file.as_os_str().is_empty() {
            return Err(invalid("secret_file", "the path is empty".into()));
        }
        let data_dir = match self.data_dir {
            Some(d) => d,
            None => default_data_dir(&name, |k| std::env::var_os(k), running_as_root()).ok_or_else(|| {
                invalid(
                    "data_dir",
                    "no default: neither XDG_STATE_HOME nor HOME is set; give --data-dir".into(),
                )
            })?,
        };
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "the path is empty".into()));
        }
        let log = self.log.unwrap_or_else(|| "info".into());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
            return Err(invalid(
                "log",
                format!("`{log}` is not a log filter (e.g. `info`, `hearsay=debug`): {e}"),
            ));
        }
        let preset = self.preset.unwrap_or_default();
        preset.engine_config().validate().map_err(|source| ConfigError::Engine { preset, source })?;
        let d = crate::store::Retention::default();
        let messages = self.retain_messages.unwrap_or(d.messages);
        if messages == 0 {
            return Err(invalid("retain_messages", "must be at least 1".into()));
        }
        let bytes = match &self.retain_bytes {
            Some(b) => parse_bytes(b).map_err(|e| invalid("retain_bytes", e))?,
            None => d.bytes,
        };
        let age = match &self.retain_age {
            Some(a) => parse_age(a).map_err(|e| invalid("retain_age", e))?,
            None => d.age,
        };
        let retention = crate::store::Retention { messages, bytes, age };
        let max_message_bytes = self.max_message_bytes.unwrap_or(crate::message::MAX_BODY);
        check_max_message_bytes(max_message_bytes).map_err(|e| invalid("max_message_bytes", e))?;
        let tags = hearsay_protocols::tags::Tags::new(self.tags.unwrap_or_default())
            .map_err(|e| invalid("tags", e.to_string()))?;
        let event_handler = self.event_handler.filter(|c| !c.trim().is_empty());
        let api = self.api.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7070)));
        if !api.ip().is_loopback() && self.api_token_file.is_none() {
            return Err(invalid(
                "api",
                format!(
                    "{api} is reachable beyond this host: give the API a token with --api-token-file FILE \
                     (clients send it as `Authorization: Bearer`), or bind it to 127.0.0.1"
                ),
            ));
        }
        let max_subscriptions = self.max_subscriptions.unwrap_or(crate::api::server::MAX_SUBSCRIPTIONS);
        if max_subscriptions == 0 {
            return Err(invalid("max_subscriptions", "must be at least 1".into()));
        }
        Ok(AgentConfig {
            tags,
            event_handler,
            name,
            bind,
            advertise,
            join,
            api,
            secret_file,
            data_dir,
            preset,
            log,
            sync: self.sync.unwrap_or_default(),
            retention,
            max_message_bytes,
            api_token_file: self.api_token_file,
            max_subscriptions,
        })
    }
}

/// Where a node named `name` keeps its key and store when no `data_dir` is given:
/// `/var/lib/hearsay/NAME` for root, else `$XDG_STATE_HOME/hearsay/NAME` (an absolute
/// `XDG_STATE_HOME` only, as the XDG spec says), else `$HOME/.local/state/hearsay/NAME`.
/// `None` when there is no home to put it in.
pub fn default_data_dir(
    name: &str,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    root: bool,
) -> Option<PathBuf> {
    if root {
        return Some(Path::new("/var/lib/hearsay").join(name));
    }
    let absolute = |k: &str| env(k).map(PathBuf::from).filter(|p| p.is_absolute());
    let state = absolute("XDG_STATE_HOME").or_else(|| absolute("HOME").map(|h| h.join(".local/state")))?;
    Some(state.join("hearsay").join(name))
}

/// Whether this process runs as root (its default data dir is then under `/var/lib`).
fn running_as_root() -> bool {
    #[cfg(unix)]
    return nix::unistd::geteuid().is_root();
    #[cfg(not(unix))]
    return false;
}

/// Read an API token file: owner-only (like the cluster secret), and at least 16 characters
/// once surrounding whitespace is trimmed.
pub fn load_api_token(path: &Path) -> Result<String, ConfigError> {
    crate::transport::identity::check_private(path).map_err(|e| invalid("api_token_file", e.to_string()))?;
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io(path.to_owned(), e))?;
    let token = text.trim();
    if token.len() < 16 || token.chars().any(|c| c.is_control() || c == ' ') {
        return Err(invalid(
            "api_token_file",
            format!("{}: the token must be at least 16 printable characters, no spaces", path.display()),
        ));
    }
    Ok(token.to_string())
}

/// Check a `max_message_bytes` setting: at least 1 byte, at most
/// [`MAX_BODY_LIMIT`](crate::message::MAX_BODY_LIMIT) (what the Engine's payload and frame
/// limits allow with every header at its largest).
pub fn check_max_message_bytes(max: usize) -> Result<(), String> {
    let limit = crate::message::MAX_BODY_LIMIT;
    if max == 0 || max > limit {
        return Err(format!(
            "{max} bytes: must be 1 to {limit} bytes (an encoded message must fit the 1 MiB \
             payload limit of the multicast protocols, headers included)"
        ));
    }
    Ok(())
}

/// A byte count: a number, optionally with a unit (`B`, `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a byte count (e.g. 256MiB, 1GB, 1048576)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        other => return Err(format!("`{other}` is not a byte unit (B, KB, KiB, MB, MiB, GB, GiB)")),
    };
    let v = n.checked_mul(mult).ok_or_else(|| format!("`{s}` is too large"))?;
    if v == 0 {
        return Err("must be at least 1 byte".into());
    }
    Ok(v)
}

/// A duration: a number with a unit (`s`, `m`, `h`, `d`).
pub fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration (e.g. 30s, 15m, 12h, 7d)"))?;
    let secs: u64 = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "" => return Err(format!("`{s}` needs a unit: s, m, h or d")),
        other => return Err(format!("`{other}` is not a duration unit (s, m, h, d)")),
    };
    let v = n.checked_mul(secs).ok_or_else(|| format!("`{s}` is too long"))?;
    if v == 0 {
        return Err("must be longer than zero".into());
    }
    Ok(std::time::Duration::from_secs(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_settings_parse_with_units_and_bad_ones_name_their_key() {
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("12 parsecs").is_err());
        assert_eq!(parse_age("7d"), Ok(std::time::Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("90s"), Ok(std::time::Duration::from_secs(90)));
        assert!(parse_age("90").unwrap_err().contains("unit"));
        let base = || FileConfig { secret_file: Some("s.key".into()), ..FileConfig::default() };
        let e = FileConfig { retain_age: Some("soon".into()), ..base() }.resolve().unwrap_err().to_string();
        assert!(e.contains("`retain_age` (--retain-age)"), "{e}");
        let e = FileConfig { retain_messages: Some(0), ..base() }.resolve().unwrap_err().to_string();
        assert!(e.contains("`retain_messages`"), "{e}");
        let c = FileConfig {
            retain_bytes: Some("1MiB".into()),
            sync: Some(crate::store::Sync::Always),
            ..base()
        }
        .resolve()
        .unwrap();
        assert_eq!((c.retention.bytes, c.sync), (1 << 20, crate::store::Sync::Always));
    }

    #[test]
    fn the_maximum_message_size_defaults_to_256_kib_and_is_bounded_by_the_payload_limit() {
        use crate::message::{MAX_BODY, MAX_BODY_LIMIT};
        assert_eq!(resolve("").unwrap().max_message_bytes, MAX_BODY);
        assert_eq!(resolve("max_message_bytes = 1024").unwrap().max_message_bytes, 1024);
        assert_eq!(
            resolve(&format!("max_message_bytes = {MAX_BODY_LIMIT}")).unwrap().max_message_bytes,
            MAX_BODY_LIMIT
        );
        for bad in [0, MAX_BODY_LIMIT + 1] {
            let e = resolve(&format!("max_message_bytes = {bad}")).unwrap_err().to_string();
            let expected = format!(
                "`max_message_bytes` (--max-message-bytes): {bad} bytes: must be 1 to {MAX_BODY_LIMIT}"
            );
            assert!(e.starts_with(&expected), "{e}");
        }
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: FileConfig = toml::from_str(
            r#"
            name = "from-file"
            bind = "127.0.0.1:9000"
            join = ["127.0.0.1:9001"]
            secret_file = "s.key"
            preset = "local"
            advertise = "127.0.0.1:9100"
            "#,
        )
        .unwrap();
        let flags = FileConfig { name: Some("from-flag".into()), ..FileConfig::default() };
        let c = file.overridden_by(flags).resolve().unwrap();
        assert_eq!(c.name, "from-flag");
        assert_eq!(c.bind, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.join, vec!["127.0.0.1:9001".parse().unwrap()]);
        assert_eq!(c.preset, Preset::Local);
        assert_eq!(c.advertise, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(c.api, "127.0.0.1:7070".parse().unwrap());
    }

    #[test]
    fn mistakes_are_errors_that_say_what_to_do() {
        assert!(toml::from_str::<FileConfig>("nmae = \"x\"").is_err(), "unknown keys are refused");
        assert!(toml::from_str::<FileConfig>("bind = \"not an address\"").is_err());
        let e = FileConfig::default().resolve().unwrap_err().to_string();
        assert!(e.contains("hearsay keygen"), "{e}");
        let e =
            FileConfig { name: Some(String::new()), secret_file: Some("s".into()), ..FileConfig::default() }
                .resolve()
                .unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { key: Key("name"), .. }), "{e}");
    }

    /// `resolve` of a file with `secret_file` set and these lines.
    fn resolve(lines: &str) -> Result<AgentConfig, ConfigError> {
        let file: FileConfig = toml::from_str(&format!("secret_file = \"s.key\"\n{lines}")).unwrap();
        file.resolve()
    }

    #[test]
    fn a_bad_setting_is_an_error_naming_its_key_and_flag() {
        let cases = [
            ("name = \"a\\u0007b\"", "`name` (--name)"),
            ("advertise = \"0.0.0.0:7946\"", "`advertise` (--advertise): 0.0.0.0:7946 cannot be dialled"),
            ("advertise = \"10.0.0.1:0\"", "`advertise` (--advertise)"),
            ("join = [\"10.0.0.1:7946\", \"10.0.0.2:0\"]", "`join` (--join): 10.0.0.2:0"),
            ("log = \"hearsay=loud\"", "`log` (--log): `hearsay=loud` is not a log filter"),
            ("data_dir = \"\"", "`data_dir` (--data-dir): the path is empty"),
        ];
        for (line, expected) in cases {
            let e = resolve(line).unwrap_err().to_string();
            assert!(e.starts_with(expected), "{line}: {e}");
        }
        let e = FileConfig::default().resolve().unwrap_err().to_string();
        assert!(e.starts_with("`secret_file` (--secret-file) is not set"), "{e}");
    }

    #[test]
    fn the_default_data_dir_is_never_relative_to_the_working_directory() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| std::ffi::OsString::from(v))
        };
        let home = env(&[("HOME", "/home/ann")]);
        assert_eq!(
            default_data_dir("n1", home, false),
            Some(PathBuf::from("/home/ann/.local/state/hearsay/n1"))
        );
        let xdg = env(&[("HOME", "/home/ann"), ("XDG_STATE_HOME", "/srv/state")]);
        assert_eq!(default_data_dir("n1", xdg, false), Some(PathBuf::from("/srv/state/hearsay/n1")));
        let relative = env(&[("HOME", "/home/ann"), ("XDG_STATE_HOME", "state")]);
        assert_eq!(
            default_data_dir("n1", relative, false),
            Some(PathBuf::from("/home/ann/.local/state/hearsay/n1")),
            "a relative XDG_STATE_HOME is ignored"
        );
        assert_eq!(
            default_data_dir("n1", env(&[("HOME", "/home/ann")]), true),
            Some(PathBuf::from("/var/lib/hearsay/n1"))
        );
        assert_eq!(default_data_dir("n1", env(&[("HOME", "home")]), false), None);
        assert!(resolve("").unwrap().data_dir.is_absolute());
    }

    #[test]
    fn an_api_beyond_loopback_needs_a_token_file() {
        let e = resolve("api = \"0.0.0.0:7070\"").unwrap_err().to_string();
        assert!(e.starts_with("`api` (--api): 0.0.0.0:7070 is reachable beyond this host"), "{e}");
        assert!(e.contains("--api-token-file"), "{e}");
        let c = resolve("api = \"0.0.0.0:7070\"\napi_token_file = \"t\"").unwrap();
        assert_eq!(c.api_token_file, Some(PathBuf::from("t")));
        assert!(resolve("api = \"[::1]:7070\"").is_ok(), "loopback needs none");
        let e = resolve("max_subscriptions = 0").unwrap_err().to_string();
        assert!(e.starts_with("`max_subscriptions` (--max-subscriptions)"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn an_api_token_file_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("hearsay-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.token");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_api_token(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_api_token(&path).unwrap(), "0123456789abcdef0123");
        std::fs::write(&path, "short\n").unwrap();
        assert!(load_api_token(&path).unwrap_err().to_string().contains("at least 16"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_the_file_does_not_know_or_cannot_parse_is_named_in_the_error() {
        let e = toml::from_str::<FileConfig>("secret_fiel = \"s.key\"").unwrap_err().to_string();
        assert!(e.contains("unknown field `secret_fiel`") && e.contains("secret_file"), "{e}");
        let e = toml::from_str::<FileConfig>("preset = \"fast\"").unwrap_err().to_string();
        assert!(e.contains("preset") && e.contains("lan"), "{e}");
    }

    #[test]
    fn every_preset_passes_the_engines_validation() {
        for preset in [Preset::Lan, Preset::Wan, Preset::Local] {
            let c = resolve(&format!("preset = \"{}\"", preset.name())).unwrap();
            assert_eq!(c.preset, preset);
            assert_eq!(preset.engine_config().validate(), Ok(()));
        }
        // And a bad Engine setting is named by machine and setting, under the preset's key.
        let source = EngineConfig { frame_limit: 10, ..Preset::Lan.engine_config() }.validate().unwrap_err();
        let e = ConfigError::Engine { preset: Preset::Lan, source }.to_string();
        assert!(e.starts_with("`preset` (--preset) = lan: frame_limit of 10 bytes"), "{e}");
    }
}
