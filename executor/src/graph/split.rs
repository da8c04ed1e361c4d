//! Splitting a command at `&&` into steps, each run and cached on its own (vite-task does
//! the same: `tsc && vite build` reruns only `vite build` when only its inputs changed).
//!
//! Splitting must not change what the command does, so it is conservative: a command is
//! split only when it is a plain `a && b && …` of simple commands. Anything a later step
//! could depend on from an earlier one *inside the shell* keeps the command whole: an
//! expansion (`$X`, `` `…` ``), a builtin that changes the shell (`cd`, `export`, …),
//! redirections, pipes, `;`, `||`, subshells, comments, a newline. A hand-written scanner
//! rather than a shell parser: it only has to recognise that small safe subset, and the
//! parsers on crates.io (brush-parser) bring `insta` and a memoizing cache as runtime
//! dependencies.

/// Builtins whose effect would be lost if the rest ran in another shell.
const SHELL_STATE: &[&str] = &[
    "cd", "pushd", "popd", "export", "unset", "set", "source", ".", "alias", "unalias", "shift",
    "readonly", "local", "declare", "typeset", "eval", "exec", "trap", "umask", "ulimit", "hash",
    "exit", "return",
];

/// The steps of `command`, or `None` when it must run as one.
pub fn and_list(command: &str) -> Option<Vec<String>> {
    let mut steps = Vec::new();
    let mut current = String::new();
    let mut chars = command.chars().peekable();
    let (mut single, mut double) = (false, false);
    while let Some(c) = chars.next() {
        if single {
            single = c != '\'';
            current.push(c);
            continue;
        }
        if double {
            match c {
                '"' => double = false,
                '$' | '`' => return None,
                '\\' => {
                    current.push(c);
                    current.push(chars.next()?);
                    continue;
                }
                _ => {}
            }
            current.push(c);
            continue;
        }
        match c {
            '\'' => single = true,
            '"' => double = true,
            '\\' => {
                current.push(c);
                match chars.next()? {
                    '\n' => return None,
                    next => current.push(next),
                }
                continue;
            }
            '&' if chars.peek() == Some(&'&') => {
                chars.next();
                steps.push(std::mem::take(&mut current));
                continue;
            }
            '$' | '`' | '(' | ')' | '|' | ';' | '<' | '>' | '&' | '{' | '}' | '\n' | '#' => {
                return None;
            }
            _ => {}
        }
        current.push(c);
    }
    if single || double {
        return None;
    }
    steps.push(current);
    let steps: Vec<String> = steps.iter().map(|s| s.trim().to_owned()).collect();
    if steps.len() < 2 || steps.iter().any(|s| s.is_empty() || changes_shell(s)) {
        return None;
    }
    Some(steps)
}

/// Whether the step's program (after `NAME=value` prefixes) is a state-changing builtin,
/// or the step is only assignments (`X=1 && …` sets a shell variable for the rest).
fn changes_shell(step: &str) -> bool {
    let program = step.split_whitespace().find(|word| !is_assignment(word));
    match program {
        None => true,
        Some(program) => SHELL_STATE.contains(&program),
    }
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::and_list;

    #[test]
    fn plain_and_lists_split() {
        assert_eq!(
            and_list("tsc -b && vite build --mode 'a && b'").expect("split"),
            ["tsc -b", "vite build --mode 'a && b'"]
        );
        assert_eq!(
            and_list("NODE_ENV=production node a.js&&echo \"done\"").expect("split"),
            ["NODE_ENV=production node a.js", "echo \"done\""]
        );
    }

    #[test]
    fn anything_a_later_step_could_inherit_keeps_the_command_whole() {
        for whole in [
            "vite build",
            "cd sub && make",
            "export X=1 && node a.js",
            "X=1 && echo ok",
            "echo $HOME && echo b",
            "echo \"$HOME\" && echo b",
            "a | b && c",
            "a > out && c",
            "a; b && c",
            "a || b && c",
            "(a) && b",
            "a && b # comment",
            "a &&",
            "a & b && c",
            "echo 'open && b",
            "a\nb && c",
        ] {
            assert_eq!(and_list(whole), None, "{whole:?}");
        }
    }
}
