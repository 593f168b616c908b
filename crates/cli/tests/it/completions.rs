//! `tessera completions SHELL`.

use crate::common::run;

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]).success();
        let script = out.stdout_text();
        assert!(!script.trim().is_empty(), "{shell}");
        assert!(script.contains("tessera"), "{shell}");
        // The token tools and their flags are in every script.
        for word in ["verify", "decode", "encode", "jwks-url"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("invalid value 'tcsh'"),
        "{}",
        out.stderr
    );
}
