//! Splitting a filter expression into tokens (words, parentheses, `!`, `&&`, `||`).

use crate::filter::FilterError;

/// A word or operator and its 1-based character position (for error messages).
#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) text: String,
    pub(super) pos: usize,
}

/// Tokens of `input`; a single `&` or `|` is refused with a hint.
pub(super) fn lex(input: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' || c == ')' || c == '!' {
            tokens.push(Token {
                text: c.to_string(),
                pos,
            });
            i += 1;
        } else if (c == '&' || c == '|') && chars.get(i + 1) == Some(&c) {
            tokens.push(Token {
                text: format!("{c}{c}"),
                pos,
            });
            i += 2;
        } else if c == '&' || c == '|' {
            return Err(FilterError::new(
                pos,
                format!("unexpected {c:?}"),
                Some(format!(
                    "write {c}{c} or the word {}",
                    if c == '&' { "and" } else { "or" }
                )),
            ));
        } else {
            let start = i;
            while i < chars.len()
                && !chars[i].is_whitespace()
                && !matches!(chars[i], '(' | ')' | '!' | '&' | '|')
            {
                i += 1;
            }
            tokens.push(Token {
                text: chars[start..i].iter().collect(),
                pos,
            });
        }
    }
    Ok(tokens)
}
