//! `tunemesh open` (the web player, logged in by a one-time code) and
//! `tunemesh user` (the accounts browsers on other PCs log in with).
//!
//! Owns: how a password is asked for (a prompt without echo, twice for a
//! new one, or `--password-stdin`), and how a browser is started.
//!
//! Must never: print a password, or put the login code anywhere but the
//! URL's fragment (which browsers do not send to the server).

use super::args::{OpenArgs, UserCommand, UserPasswordArgs};
use super::remote::ApiClient;
use anyhow::{bail, Context, Result};
use std::io::BufRead;
use std::path::Path;
use tunemesh::accounts::{Accounts, Password, UserName};
use tunemesh::http::dto::{LoginCodeView, UserView};

/// `tunemesh open`.
pub fn open(dir: &Path, a: OpenArgs) -> Result<()> {
    let api = ApiClient::open(dir)?;
    let code: LoginCodeView = api.post("/api/web/code", None::<&()>)?;
    let url = format!("{}/#code={}", api.base_url(), code.code);
    println!("{url}");
    eprintln!(
        "(a one-time login, good for {} s; it leaves the address bar once used)",
        code.expires_in_s
    );
    if !a.print {
        if let Err(e) = start_browser(&url) {
            eprintln!("no browser started ({e}); open the URL above");
        }
    }
    Ok(())
}

fn start_browser(url: &str) -> std::io::Result<()> {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(|_| ())
}

/// `tunemesh user …`.
pub fn user(dir: &Path, c: UserCommand) -> Result<()> {
    let accounts = Accounts::new(dir);
    match c {
        UserCommand::Add(a) => {
            let name: UserName = a.name.parse()?;
            let pw = password(&a)?;
            accounts.add(&name, &pw)?;
            eprintln!("account {name} made");
        }
        UserCommand::Passwd(a) => {
            let name: UserName = a.name.parse()?;
            if !accounts.list()?.iter().any(|u| u.name == name) {
                bail!("no account named {name:?}");
            }
            let pw = password(&a)?;
            accounts.set_password(&name, &pw)?;
            eprintln!("password of {name} changed");
        }
        UserCommand::Apikey(a) => {
            let name: UserName = a.name.parse()?;
            let key = accounts.new_api_key(&name)?;
            println!("{key}");
            eprintln!(
                "a new API key for {name} (Subsonic apps: apiKey); the old one no longer works"
            );
        }
        UserCommand::Rm(a) => {
            let name: UserName = a.name.parse()?;
            accounts.remove(&name)?;
            eprintln!("account {name} removed");
        }
        UserCommand::Ls(a) => {
            let users: Vec<UserView> = accounts
                .list()?
                .into_iter()
                .map(|u| UserView {
                    name: u.name.to_string(),
                    created_unix_ms: u.created_unix_ms,
                })
                .collect();
            if a.json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else if users.is_empty() {
                eprintln!("no accounts (make one: tunemesh user add NAME)");
            } else {
                for u in users {
                    println!("{}", u.name);
                }
            }
        }
    }
    Ok(())
}

/// The password: stdin's first line, or asked twice without echo.
fn password(a: &UserPasswordArgs) -> Result<Password> {
    let text = if a.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        let first = rpassword::prompt_password(format!("password for {}: ", a.name))
            .context("cannot ask for a password (no terminal? use --password-stdin)")?;
        let again = rpassword::prompt_password("again: ")?;
        if again != first {
            bail!("the two passwords differ; nothing changed");
        }
        first
    };
    Ok(Password::new(text)?)
}
