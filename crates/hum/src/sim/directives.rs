//! What a prompt may ask of the simulator for its own turn, beside the tool
//! directives of [`mcp`](super::mcp): `SIM_USAGE` (the numbers its `result`
//! reports) and `SIM_GROW_MB` (memory it takes and keeps). Per-turn
//! versions of the `--sim-*` knobs, so one test can give different cells
//! different numbers.

use super::events::Usage;

/// `SIM_USAGE in=N out=N cache_read=N cache_creation=N cost=USD` (any
/// subset, up to the end of its line) applied over `usage`. Unknown keys
/// and unreadable values are ignored, as a prompt is free text.
pub fn usage_in(prompt: &str, mut usage: Usage) -> Usage {
    let Some(at) = prompt.find("SIM_USAGE") else {
        return usage;
    };
    let rest = &prompt[at + "SIM_USAGE".len()..];
    let line = rest.split('\n').next().unwrap_or_default();
    for pair in line.split_whitespace() {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let tokens = value.parse::<u64>().ok();
        match (key, tokens) {
            ("in", Some(n)) => usage.input_tokens = n,
            ("out", Some(n)) => usage.output_tokens = n,
            ("cache_read", Some(n)) => usage.cache_read_tokens = n,
            ("cache_creation", Some(n)) => usage.cache_creation_tokens = n,
            ("cost", _) => {
                if let Ok(c) = value.parse::<f64>() {
                    usage.cost = Some(c).filter(|c| c.is_finite() && *c >= 0.0);
                }
            }
            _ => {}
        }
    }
    usage
}

/// `SIM_GROW_MB <n>`: how many MiB this turn takes and keeps.
pub fn grow_mb_in(prompt: &str) -> Option<usize> {
    let at = prompt.find("SIM_GROW_MB")?;
    prompt[at + "SIM_GROW_MB".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usage_directive_sets_only_what_it_names() {
        let base = Usage::tokens(7, 8);
        let u = usage_in("hi SIM_USAGE out=40 cache_read=5 cost=0.25\nmore", base);
        assert_eq!(u.input_tokens, 7);
        assert_eq!(u.output_tokens, 40);
        assert_eq!(u.cache_read_tokens, 5);
        assert_eq!(u.cache_creation_tokens, 0);
        assert_eq!(u.cost_usd(), 0.25);
        assert_eq!(usage_in("no directive", base), base);
        // A bad value is ignored, not a crash; a negative cost too.
        let u = usage_in("SIM_USAGE in=lots cost=-1 out=3", base);
        assert_eq!((u.input_tokens, u.output_tokens, u.cost), (7, 3, None));
    }

    #[test]
    fn a_grow_directive_reads_its_number() {
        assert_eq!(grow_mb_in("please SIM_GROW_MB 64 now"), Some(64));
        assert_eq!(grow_mb_in("SIM_GROW_MB x"), None);
        assert_eq!(grow_mb_in("nothing"), None);
    }
}
