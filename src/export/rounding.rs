//! Rounding exact nano-unit amounts to a currency's minor unit so that parts still add
//! up: largest-remainder allocation with a stable tie-break (earlier key first).
//!
//! Applied hierarchically per currency: the grand total is rounded half-to-even, tenant
//! totals are allocated to sum exactly to it, then each tenant's rows are allocated to
//! sum exactly to the tenant's rounded total. Every rounded amount is the floor or the
//! ceiling of the exact one at the minor unit.

/// Nano-units per unit.
const NANOS: i128 = 1_000_000_000;

/// ISO 4217 minor-unit exponent (2 unless listed).
pub fn minor_unit_exponent(currency: &str) -> u32 {
    match currency.to_ascii_uppercase().as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
        | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// The size of one minor unit in nano-units.
pub fn minor_unit_nanos(currency: &str) -> i128 {
    NANOS / 10i128.pow(minor_unit_exponent(currency))
}

/// Rounds `n` to a multiple of `unit`, ties to even.
pub fn round_half_even(n: i128, unit: i128) -> i128 {
    let q = n.div_euclid(unit);
    let r = n.rem_euclid(unit);
    let up = match (2 * r).cmp(&unit) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => q % 2 != 0,
    };
    (q + up as i128) * unit
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot allocate a total of {target} over {parts} parts whose floors sum to {floors} (unit {unit})")]
pub struct AllocError {
    pub target: i128,
    pub parts: usize,
    pub floors: i128,
    pub unit: i128,
}

/// Rounds each amount to a multiple of `unit` so that they sum exactly to `target` (a
/// multiple of `unit` within one unit per part of the exact sum). The parts with the
/// largest remainders are rounded up; ties go to the earlier index.
pub fn allocate(amounts: &[i128], target: i128, unit: i128) -> Result<Vec<i128>, AllocError> {
    let floors: Vec<i128> = amounts.iter().map(|a| a.div_euclid(unit)).collect();
    let sum_floors: i128 = floors.iter().sum();
    let k = target.div_euclid(unit) - sum_floors;
    let err = || AllocError {
        target,
        parts: amounts.len(),
        floors: sum_floors * unit,
        unit,
    };
    if target.rem_euclid(unit) != 0 || k < 0 || k > amounts.len() as i128 {
        return Err(err());
    }
    let mut order: Vec<usize> = (0..amounts.len()).collect();
    order.sort_by(|&a, &b| {
        amounts[b]
            .rem_euclid(unit)
            .cmp(&amounts[a].rem_euclid(unit))
            .then(a.cmp(&b))
    });
    let mut out: Vec<i128> = floors.iter().map(|f| f * unit).collect();
    for &i in order.iter().take(k as usize) {
        out[i] += unit;
    }
    Ok(out)
}

/// Rounds amounts grouped as `(group, amount)` (rows already in key order): the grand
/// total half-to-even, group totals allocated to it, rows allocated to their group's total.
pub fn round_hierarchical(rows: &[(usize, i128)], groups: usize, unit: i128) -> Result<Vec<i128>, AllocError> {
    let mut group_exact = vec![0i128; groups];
    for (g, a) in rows {
        group_exact[*g] += a;
    }
    let grand: i128 = group_exact.iter().sum();
    let group_rounded = allocate(&group_exact, round_half_even(grand, unit), unit)?;
    let mut out = vec![0i128; rows.len()];
    for (g, target) in group_rounded.iter().enumerate() {
        let idx: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].0 == g).collect();
        let amounts: Vec<i128> = idx.iter().map(|&i| rows[i].1).collect();
        let r = allocate(&amounts, *target, unit)?;
        for (i, v) in idx.into_iter().zip(r) {
            out[i] = v;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classic_thirds() {
        let unit = 10_000_000; // cents
        let third = 333_333_333; // 0.333333333
        let r = allocate(&[third, third, third], 1_000_000_000, unit).unwrap();
        assert_eq!(r, vec![340_000_000, 330_000_000, 330_000_000]);
        assert_eq!(round_half_even(5_000_000, unit), 0);
        assert_eq!(round_half_even(15_000_000, unit), 20_000_000);
        assert_eq!(round_half_even(-15_000_000, unit), -20_000_000);
        assert_eq!(minor_unit_nanos("JPY"), NANOS);
        assert_eq!(minor_unit_nanos("KWD"), 1_000_000);
    }

    proptest! {
        #[test]
        fn rounded_rows_sum_to_rounded_totals(
            rows in prop::collection::vec((0usize..4, -50_000_000_000i128..50_000_000_000i128), 1..60),
            cur in prop::sample::select(vec!["USD", "JPY", "KWD", "EUR"]),
        ) {
            let unit = minor_unit_nanos(cur);
            let r = round_hierarchical(&rows, 4, unit).unwrap();
            let grand_exact: i128 = rows.iter().map(|x| x.1).sum();
            prop_assert_eq!(r.iter().sum::<i128>(), round_half_even(grand_exact, unit));
            let mut tenant_rounded = [0i128; 4];
            let mut tenant_exact = [0i128; 4];
            for (i, (g, a)) in rows.iter().enumerate() {
                prop_assert_eq!(r[i] % unit, 0);
                prop_assert!((r[i] - a).abs() < unit, "row off by a unit or more");
                tenant_rounded[*g] += r[i];
                tenant_exact[*g] += a;
            }
            for g in 0..4 {
                prop_assert_eq!(tenant_rounded[g] % unit, 0);
                prop_assert!((tenant_rounded[g] - tenant_exact[g]).abs() < unit, "tenant off by a unit or more");
            }
            // Stable: same input, same output.
            prop_assert_eq!(round_hierarchical(&rows, 4, unit).unwrap(), r);
        }
    }
}
