//! Numbers as people read them in `hum status` and `hum top`.

/// Bytes in MiB, or GiB past a gibibyte, one decimal.
pub fn human_bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if b as f64 >= 1024.0 * MIB {
        format!("{:.1} GiB", b as f64 / (1024.0 * MIB))
    } else {
        format!("{:.1} MiB", b as f64 / MIB)
    }
}

/// A duration as `42s`, `3m05s` or `2h07m`; `-` for none.
pub fn human_ms(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Dollars with enough digits to tell an amount from nothing: cents from a
/// dollar up, else up to four significant digits (`$0.0003`, `$0.0125`;
/// never `$0.00` for a budget above zero).
pub fn usd(v: f64) -> String {
    if !v.is_finite() || v <= 0.0 || v >= 1.0 {
        return format!("${v:.2}");
    }
    // Places after the point that show four significant digits.
    let places = (3 - v.log10().floor() as i32).clamp(2, 10) as usize;
    let s = format!("{v:.places$}");
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let mut frac = frac.trim_end_matches('0').to_owned();
    while frac.len() < 2 {
        frac.push('0');
    }
    format!("${int}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::usd;

    #[test]
    fn small_amounts_keep_their_digits() {
        assert_eq!(usd(0.0003), "$0.0003");
        assert_eq!(usd(0.0125), "$0.0125");
        assert_eq!(usd(0.5), "$0.50");
        assert_eq!(usd(0.123456), "$0.1235");
        assert_eq!(usd(10.0), "$10.00");
        assert_eq!(usd(2.345), "$2.35");
        assert_eq!(usd(0.0), "$0.00");
    }
}
