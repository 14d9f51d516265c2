//! Where hum keeps its state, configuration and logs, per OS.
//!
//! An explicit variable always wins (`HUM_STATE_DIR`, then the XDG ones);
//! without one, each OS gets the place its users look: `~/.local/state/hum`
//! and `~/.config/hum` on Linux, `~/Library/Application Support/hum` and
//! `~/Library/Logs/hum` on macOS. Pure functions of the OS and an
//! environment lookup, so every OS's answer is tested on any of them. (The
//! socket's rule is thrum's: `thrum::socket_path_for`.)

use super::Os;
use std::ffi::OsString;
use std::path::PathBuf;

/// Everything hum puts on disk, resolved once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Ledgers, the gateway token, `hum up`'s files.
    pub state: PathBuf,
    /// `hum.json`.
    pub config_file: PathBuf,
    /// `hum up`'s daemon, worker and gateway logs.
    pub logs: PathBuf,
}

impl Paths {
    /// This process's paths: its OS and environment.
    pub fn current() -> Paths {
        Paths::for_os(super::HOST, |k| std::env::var_os(k))
    }

    /// The rule itself.
    pub fn for_os(os: Os, env: impl Fn(&str) -> Option<OsString>) -> Paths {
        let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = var("HOME").unwrap_or_else(|| PathBuf::from("/tmp"));
        let library = home.join("Library");
        let explicit_state =
            var("HUM_STATE_DIR").or_else(|| var("XDG_STATE_HOME").map(|d| d.join("hum")));
        let state = explicit_state.clone().unwrap_or_else(|| match os {
            Os::MacOs => library.join("Application Support/hum"),
            Os::Linux | Os::OtherUnix => home.join(".local/state/hum"),
        });
        let config_dir = var("XDG_CONFIG_HOME")
            .map(|d| d.join("hum"))
            .unwrap_or_else(|| match os {
                Os::MacOs => library.join("Application Support/hum"),
                Os::Linux | Os::OtherUnix => home.join(".config/hum"),
            });
        // Logs follow an explicit state dir (a sandbox keeps everything in
        // one place); otherwise macOS users find them in Console's place.
        let logs = match (os, explicit_state) {
            (Os::MacOs, None) => library.join("Logs/hum"),
            _ => state.join("logs"),
        };
        Paths {
            state,
            config_file: config_dir.join("hum.json"),
            logs,
        }
    }
}

/// `$HUM_STATE_DIR`, else `$XDG_STATE_HOME/hum`, else the OS's place
/// (`~/.local/state/hum`, on macOS `~/Library/Application Support/hum`).
pub fn default_state_dir() -> PathBuf {
    Paths::current().state
}

/// The executable `name` in a directory of `PATH`, the first found.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn linux_defaults_follow_xdg_conventions() {
        let p = Paths::for_os(Os::Linux, env(&[("HOME", "/home/a")]));
        assert_eq!(p.state, PathBuf::from("/home/a/.local/state/hum"));
        assert_eq!(p.config_file, PathBuf::from("/home/a/.config/hum/hum.json"));
        assert_eq!(p.logs, PathBuf::from("/home/a/.local/state/hum/logs"));
    }

    #[test]
    fn macos_defaults_are_where_a_mac_user_looks() {
        let p = Paths::for_os(Os::MacOs, env(&[("HOME", "/Users/a")]));
        assert_eq!(
            p.state,
            PathBuf::from("/Users/a/Library/Application Support/hum")
        );
        assert_eq!(
            p.config_file,
            PathBuf::from("/Users/a/Library/Application Support/hum/hum.json")
        );
        assert_eq!(p.logs, PathBuf::from("/Users/a/Library/Logs/hum"));
    }

    /// The `<string>` after `<key>name</key>` in the plist.
    fn plist_string<'a>(plist: &'a str, key: &str) -> &'a str {
        let after = &plist[plist
            .find(&format!("<key>{key}</key>"))
            .unwrap_or_else(|| panic!("{key} missing"))..];
        let start = after.find("<string>").unwrap() + "<string>".len();
        &after[start..start + after[start..].find("</string>").unwrap()]
    }

    #[test]
    fn the_launchd_plist_agrees_with_the_macos_defaults() {
        let plist = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/dev.hum.plist"
        ));
        // The plist names a placeholder home its comment's sed replaces.
        let home = "/Users/USERNAME";
        let mac = Paths::for_os(Os::MacOs, env(&[("HOME", home)]));
        for key in ["StandardOutPath", "StandardErrorPath"] {
            let path = std::path::Path::new(plist_string(plist, key));
            assert_eq!(path.parent(), Some(mac.logs.as_path()), "{key}");
        }
        assert!(
            plist.contains(&format!("s|{home}|$HOME|g")),
            "the sed that fills the home in"
        );
        // Nothing Linux-only, and nothing that would move hum's own files
        // away from the defaults.
        for absent in [
            "/run/user",
            "XDG_",
            "HUM_STATE_DIR",
            "HUM_THRUM_SOCK",
            ".local/state",
        ] {
            assert!(!plist.contains(absent), "{absent} in the plist");
        }
        // `hum up` under launchd, given longer than the worst teardown ladder.
        let args = &plist[plist.find("<key>ProgramArguments</key>").unwrap()..];
        let args = &args[..args.find("</array>").unwrap()];
        assert!(args.contains("/hum</string>") && args.contains("<string>up</string>"));
        let timeout = &plist[plist.find("<key>ExitTimeOut</key>").unwrap()..];
        let secs: u64 = timeout
            [timeout.find("<integer>").unwrap() + 9..timeout.find("</integer>").unwrap()]
            .parse()
            .unwrap();
        let ladder = crate::cell::Grace::default();
        assert!(
            std::time::Duration::from_secs(secs) > (ladder.close + ladder.term + ladder.kill) * 2,
            "ExitTimeOut {secs}s"
        );
    }

    #[test]
    fn explicit_variables_win_on_every_os_and_empty_ones_count_as_unset() {
        for os in [Os::Linux, Os::MacOs] {
            let p = Paths::for_os(
                os,
                env(&[
                    ("HOME", "/h"),
                    ("XDG_STATE_HOME", "/xs"),
                    ("XDG_CONFIG_HOME", "/xc"),
                ]),
            );
            assert_eq!(p.state, PathBuf::from("/xs/hum"), "{os:?}");
            assert_eq!(p.config_file, PathBuf::from("/xc/hum/hum.json"));
            assert_eq!(p.logs, PathBuf::from("/xs/hum/logs"));
            let p = Paths::for_os(
                os,
                env(&[
                    ("HOME", "/h"),
                    ("HUM_STATE_DIR", "/s"),
                    ("XDG_STATE_HOME", "/xs"),
                ]),
            );
            assert_eq!(
                (p.state, p.logs),
                (PathBuf::from("/s"), PathBuf::from("/s/logs"))
            );
            let p = Paths::for_os(
                os,
                env(&[
                    ("HOME", "/h"),
                    ("HUM_STATE_DIR", ""),
                    ("XDG_CONFIG_HOME", ""),
                ]),
            );
            assert_ne!(p.state, PathBuf::from(""), "{os:?}");
            assert!(p.config_file.starts_with("/h"), "{p:?}");
        }
    }
}
