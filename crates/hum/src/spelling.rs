//! One spelling for an enum's wire names: the tables that serde, logs,
//! metric labels and parsing all read.

/// `as_str`, `Display` and `FromStr` from one table, so the spellings
/// cannot drift apart (a test holds serde to the same table).
macro_rules! one_spelling {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),*
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<$ty, String> {
                match s {
                    $($name => Ok($ty::$variant),)*
                    other => Err(format!(
                        "unknown {}: {other} (one of: {})",
                        stringify!($ty).to_lowercase(),
                        [$($name),*].join(", ")
                    )),
                }
            }
        }
    };
}

pub(crate) use one_spelling;
