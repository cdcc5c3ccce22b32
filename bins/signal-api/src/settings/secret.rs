//! Secrets (home tokens, the JWT and TURN secrets): given as a value, a
//! file or an environment variable, on the command line or in the config
//! file, and read here. Their values are never logged.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{parser::ValueSource, ArgMatches};

/// A secret given directly, as a file to read, or as an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Secret {
    Value(String),
    File(PathBuf),
    Env(String),
}

impl Secret {
    pub(super) fn read(self, what: &str) -> anyhow::Result<String> {
        let value = match self {
            Secret::Value(value) => value,
            Secret::File(path) => std::fs::read_to_string(&path)
                .with_context(|| format!("could not read the {what} file {}", path.display()))?
                .trim()
                .to_owned(),
            Secret::Env(var) => std::env::var(&var)
                .with_context(|| format!("the {what} variable {var} is not set"))?
                .trim()
                .to_owned(),
        };
        if value.is_empty() {
            bail!("the {what} is empty");
        }
        Ok(value)
    }

    /// `file:PATH` or `env:VAR`.
    pub(super) fn parse_source(source: &str) -> anyhow::Result<Self> {
        match source.split_once(':') {
            Some(("file", path)) if !path.is_empty() => Ok(Secret::File(path.into())),
            Some(("env", var)) if !var.is_empty() => Ok(Secret::Env(var.to_owned())),
            _ => bail!("a home's token source must be file:PATH or env:VAR, not {source:?}"),
        }
    }
}

/// Picks between a direct value and a file flag given through clap: the one
/// from the stronger source (command line over environment) wins; both from
/// the same source is ambiguous.
pub(super) fn cli_secret(
    matches: &ArgMatches,
    value_id: &str,
    value: Option<String>,
    file_id: &str,
    file: Option<PathBuf>,
) -> anyhow::Result<Option<Secret>> {
    match (value, file) {
        (None, None) => Ok(None),
        (Some(value), None) => Ok(Some(Secret::Value(value))),
        (None, Some(path)) => Ok(Some(Secret::File(path))),
        (Some(value), Some(path)) => {
            let rank = |id: &str| {
                matches
                    .value_source(id)
                    .unwrap_or(ValueSource::DefaultValue)
            };
            match rank(value_id).cmp(&rank(file_id)) {
                std::cmp::Ordering::Greater => Ok(Some(Secret::Value(value))),
                std::cmp::Ordering::Less => Ok(Some(Secret::File(path))),
                std::cmp::Ordering::Equal => bail!(
                    "--{} and --{} were both given; use one",
                    value_id.replace('_', "-"),
                    file_id.replace('_', "-")
                ),
            }
        }
    }
}

pub(super) fn file_secret(
    value: Option<String>,
    file: Option<PathBuf>,
    what: &str,
) -> anyhow::Result<Option<Secret>> {
    match (value, file) {
        (Some(_), Some(_)) => bail!("the config file sets both {what} and {what}_file; use one"),
        (Some(value), None) => Ok(Some(Secret::Value(value))),
        (None, Some(path)) => Ok(Some(Secret::File(path))),
        (None, None) => Ok(None),
    }
}

/// The secret setting `id` (a value, or a file under `{id}_file`): from the
/// flags/env if given there (see [`cli_secret`]), else from the config file,
/// read and described as `what` in errors.
pub(super) fn read_secret(
    matches: &ArgMatches,
    id: &str,
    (cli_value, cli_file): (Option<String>, Option<PathBuf>),
    (file_value, file_file): (Option<String>, Option<PathBuf>),
    what: &str,
) -> anyhow::Result<Option<String>> {
    cli_secret(matches, id, cli_value, &format!("{id}_file"), cli_file)?
        .or(file_secret(file_value, file_file, id)?)
        .map(|secret| secret.read(what))
        .transpose()
}
