//! The sessions shown in `rules/README.md` are run here, so the documentation shows what the
//! tool prints today.

use std::process::Command;

/// Each `$ cardwall-rules …` line of a ```console block, with the lines printed after it.
fn sessions(markdown: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut in_console = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_console = line == "```console";
            continue;
        }
        if !in_console {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            found.push((command.to_string(), String::new()));
        } else if let Some((_, output)) = found.last_mut() {
            output.push_str(line);
            output.push('\n');
        }
    }
    found
}

/// Splits a command line into words, honouring double quotes.
fn words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in command.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

#[test]
fn readme_sessions_print_what_the_readme_shows() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{dir}/README.md")).unwrap();
    let sessions = sessions(&readme);
    assert!(
        sessions.len() >= 8,
        "the README shows its sessions in ```console blocks"
    );
    for (command, expected) in sessions {
        let args = words(&command);
        assert_eq!(args[0], "cardwall-rules", "{command}");
        let out = Command::new(env!("CARGO_BIN_EXE_cardwall-rules"))
            .args(&args[1..])
            .current_dir(dir)
            .output()
            .unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(printed, expected, "`{command}` printed something else");
    }
}
