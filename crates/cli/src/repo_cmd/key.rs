//! `repo key`: list, add, remove and change the passwords that open the repository.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use holdfast_repository::crypto::KdfParams;

use super::{RepoArgs, new_password, print_json};

#[derive(Args, Debug)]
pub(super) struct KeyCmd {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// List key files.
    List,
    /// Add a password (read from --new-password-file, HOLDFAST_NEW_PASSWORD or a prompt).
    Add {
        #[arg(long, env = "HOLDFAST_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// Remove a key file by id or prefix.
    Remove {
        /// Key id.
        id: String,
    },
    /// Change the password of the key in use.
    Passwd {
        #[arg(long, env = "HOLDFAST_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
    },
}

impl KeyCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let mut repo = args.open()?;
        match &self.command {
            KeyCommand::List => {
                let keys = repo.keys()?;
                if args.json {
                    let v: Vec<_> = keys
                        .iter()
                        .map(|k| serde_json::json!({"id": k.name, "current": k.current, "key": k.key}))
                        .collect();
                    print_json(&v)?;
                } else {
                    for k in keys {
                        println!(
                            "{}{:<10} {:<16} {:<12} {}",
                            if k.current { "*" } else { " " },
                            &k.name[..8],
                            k.key.hostname,
                            k.key.username,
                            k.key.created
                        );
                    }
                }
            }
            KeyCommand::Add { new_password_file } => {
                let pw = new_password(new_password_file)?;
                let name = repo.add_key(pw.as_bytes(), KdfParams::default())?;
                println!("added key {}", &name[..8]);
            }
            KeyCommand::Remove { id } => {
                let name = repo.remove_key(id)?;
                println!("removed key {}", &name[..8]);
            }
            KeyCommand::Passwd { new_password_file } => {
                let pw = new_password(new_password_file)?;
                let name = repo.change_password(pw.as_bytes(), KdfParams::default())?;
                println!("password changed; new key {}", &name[..8]);
            }
        }
        Ok(())
    }
}
