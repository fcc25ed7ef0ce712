//! Kubernetes quantities (`100m`, `0.5`, `128Mi`, `1G`, `1e3`) read into whole numbers:
//! CPU in millicores, memory (and counts) in units, rounded *up* as Kubernetes'
//! `MilliValue()` and `Value()` do, so `0.1m` of CPU is 1 millicore, never 0. The scheduler
//! adds and compares them; the node agent turns limits into Docker's.

/// Why a quantity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {quantity:?}: {reason}")]
pub struct QuantityError {
    /// The text as written.
    pub quantity: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A CPU quantity in millicores, rounded up: `100m` → 100, `1` → 1000, `0.5` → 500,
/// `2.5` → 2500, `1e-3` → 1.
pub fn parse_cpu(q: &str) -> Result<i64, QuantityError> {
    Parsed::new(q)?.ceil_scaled(3, q)
}

/// A memory (or plain count) quantity in bytes, rounded up: `128Mi` → 134217728,
/// `1G` → 10⁹, `1k` → 1000, `1e3` → 1000, `1000` → 1000.
pub fn parse_memory(q: &str) -> Result<i64, QuantityError> {
    Parsed::new(q)?.ceil_scaled(0, q)
}

/// The decimal suffixes, from 10⁻⁹ up by 10³ each.
const DECIMAL_SUFFIXES: [&str; 10] = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];
/// The binary suffixes, from 2¹⁰ up by 2¹⁰ each.
const BINARY_SUFFIXES: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

/// A quantity as an exact value: `mantissa × 10^exp10 × 2^exp2`.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    mantissa: i128,
    exp10: i32,
    exp2: u32,
}

impl Parsed {
    /// Reads the grammar of `k8s.io/apimachinery/pkg/api/resource`: an optional sign, a
    /// decimal number (`1`, `1.5`, `.5`, `1.`), then a binary suffix (`Ki` … `Ei`), a
    /// decimal suffix (`n`, `u`, `m`, none, `k`, `M`, `G`, `T`, `P`, `E`) or an exponent
    /// (`e3`, `E-2`). Negative values are refused: nothing requests or offers less than
    /// nothing.
    fn new(q: &str) -> Result<Parsed, QuantityError> {
        let fail = |reason| QuantityError {
            quantity: q.to_owned(),
            reason,
        };
        let (negative, rest) = match q.as_bytes().first() {
            Some(b'-') => (true, &q[1..]),
            Some(b'+') => (false, &q[1..]),
            Some(_) => (false, q),
            None => return Err(fail("it is empty")),
        };
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(fail("it does not start with a number"));
        }
        if fraction.contains('.') {
            return Err(fail("it has more than one decimal point"));
        }
        let mut mantissa: i128 = 0;
        for d in whole.bytes().chain(fraction.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(d - b'0')))
                .ok_or_else(|| fail("it has too many digits"))?;
        }
        if negative && mantissa != 0 {
            return Err(fail("it is negative"));
        }
        let digits_after_point =
            i32::try_from(fraction.len()).map_err(|_| fail("it has too many digits"))?;
        let decimal = DECIMAL_SUFFIXES.iter().position(|s| *s == suffix);
        let binary = BINARY_SUFFIXES.iter().position(|s| *s == suffix);
        let (exp10, exp2) = match (decimal, binary, suffix.strip_prefix(['e', 'E'])) {
            (Some(i), _, _) => (3 * i as i32 - 9, 0),
            (_, Some(i), _) => (0, 10 * (i as u32 + 1)),
            (_, _, Some(exp)) => {
                let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(fail("its exponent is not a whole number"));
                }
                let e: i32 = exp.parse().map_err(|_| fail("its exponent is too large"))?;
                if !(-100..=100).contains(&e) {
                    return Err(fail("its exponent is too large"));
                }
                (e, 0)
            }
            _ => return Err(fail("its suffix is not one Kubernetes knows")),
        };
        Ok(Parsed {
            mantissa,
            exp10: exp10 - digits_after_point,
            exp2,
        })
    }

    /// The value × 10^`scale`, rounded up to a whole number.
    fn ceil_scaled(&self, scale: i32, q: &str) -> Result<i64, QuantityError> {
        let too_large = || QuantityError {
            quantity: q.to_owned(),
            reason: "it is too large",
        };
        let mut m = self
            .mantissa
            .checked_mul(1i128 << self.exp2)
            .ok_or_else(too_large)?;
        let e = self.exp10 + scale;
        if e >= 0 {
            let factor = 10i128.checked_pow(e.unsigned_abs()).ok_or_else(too_large)?;
            m = m.checked_mul(factor).ok_or_else(too_large)?;
        } else if m != 0 {
            m = match 10i128.checked_pow(e.unsigned_abs()) {
                // (m + d - 1) / d rounds up; m < 2^127 / 2 here, so no overflow.
                Some(d) => m / d + i128::from(m % d != 0),
                // Smaller than 10^-38 of the unit, but more than zero.
                None => 1,
            };
        }
        i64::try_from(m).map_err(|_| too_large())
    }
}
