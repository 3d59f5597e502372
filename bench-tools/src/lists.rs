//! The comma-separated list options (`--services 1,1000`, `--modes
//! xlb,forward`, `--cases udp,reply`): each value at most once. A value
//! given twice would be measured twice and its figures merged into one
//! median as though they were one scale's or one mode's, or, where a run
//! keeps one of each, measured once while the command line says twice; so a
//! duplicate is refused, the value named, before anything is set up.

/// Refuses `values` (the option `flag`'s) if one is given twice, naming it
/// as `name` writes a value on the command line.
pub(crate) fn distinct<T: PartialEq>(
    flag: &str,
    values: &[T],
    name: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    for (i, value) in values.iter().enumerate() {
        if values[..i].contains(value) {
            let list: Vec<String> = values.iter().map(&name).collect();
            anyhow::bail!(
                "{flag} {}: {} is given more than once; give each value once",
                list.join(","),
                name(value)
            );
        }
    }
    Ok(())
}

/// A value of a `clap::ValueEnum` as the command line writes it.
pub(crate) fn choice<T: clap::ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_given_twice_is_named() {
        let err = distinct("--services", &[1, 1000, 1], u32::to_string).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--services 1,1000,1: 1 is given more than once; give each value once"
        );
        distinct("--services", &[1, 1000, 100_000], u32::to_string).unwrap();
        distinct::<u32>("--services", &[], u32::to_string).unwrap();
    }
}
