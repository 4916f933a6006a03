//! Where PINs come from: an environment variable, a file, or a prompt on the terminal that
//! names the token and the tries left. PINs are held in `token_core::Pin` (zeroized) and never
//! printed.

use std::path::PathBuf;
use std::sync::Arc;

use token_core::{Error, Pin, PinCallback, PinRequest, Result};

/// One secret's source, as the command line gave it.
#[derive(Clone, Debug, Default)]
pub struct Source {
    /// `--…-env VAR`.
    pub env: Option<String>,
    /// `--…-file FILE`.
    pub file: Option<PathBuf>,
    /// What the secret is, for prompts and errors ("PIN", "new PIN", "PUK").
    pub what: &'static str,
}

impl Source {
    pub fn new(env: Option<String>, file: Option<PathBuf>, what: &'static str) -> Self {
        Self { env, file, what }
    }

    /// The secret from the environment or the file, if one was named.
    fn given(&self) -> Result<Option<Pin>> {
        if let Some(var) = &self.env {
            let value = std::env::var(var).map_err(|_| {
                Error::bad_parameter(format!(
                    "{}: environment variable {var} is not set",
                    self.what
                ))
            })?;
            return Ok(Some(Pin::new(value.into_bytes())));
        }
        if let Some(path) = &self.file {
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                Error::bad_parameter(format!("{}: cannot read {}", self.what, path.display()))
                    .with_source(e)
            })?);
            let line = text.lines().next().unwrap_or("");
            return Ok(Some(Pin::from(line)));
        }
        Ok(None)
    }

    /// The secret, prompting on the terminal with `prompt` when no source was named.
    pub fn read(&self, prompt: &str) -> Result<Pin> {
        if let Some(pin) = self.given()? {
            return Ok(pin);
        }
        prompt_secret(prompt, self.what)
    }

    /// A callback for `TokenSession`: the named source, or a prompt that says how many tries
    /// are left and warns plainly before the last one.
    pub fn callback(&self) -> Result<Arc<dyn PinCallback>> {
        let given = self.given()?;
        let what = self.what;
        Ok(Arc::new(move |req: &PinRequest| match &given {
            Some(pin) => Some(pin.clone()),
            None => match prompt_secret(&req.prompt(), what) {
                Ok(pin) => Some(pin),
                Err(e) => {
                    eprintln!("tokenctl: {e}");
                    None
                }
            },
        }))
    }
}

fn prompt_secret(prompt: &str, what: &str) -> Result<Pin> {
    let text = rpassword::prompt_password(prompt).map_err(|e| {
        Error::bad_parameter(format!(
            "cannot prompt for the {what} (no terminal?): give it with --…-env or --…-file"
        ))
        .with_source(e)
    })?;
    let text = zeroize::Zeroizing::new(text);
    Ok(Pin::from(text.as_str()))
}
