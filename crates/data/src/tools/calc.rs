//! The calculator: a small arithmetic evaluator, sandboxed by construction. It reads numbers,
//! `+ - * / ^` (also `x`, `×`, `÷`, `**`), unary signs and parentheses, and nothing else: no
//! names, no files, no loops. Every bound is explicit: the expression is at most
//! [`MAX_INPUT`] characters (so the work is linear in a small input), parentheses nest at most
//! [`MAX_DEPTH`] deep, and every intermediate value stays within ±[`MAX_VALUE`], so integers
//! below it are exact in `f64` and the result prints in a few characters.
//!
//! Order: tokens, then a recursive-descent parse that evaluates as it goes, with the usual
//! precedence (`^` binds tightest and to the right, then `* /`, then `+ -`).

/// The longest expression read, in characters.
pub const MAX_INPUT: usize = 200;
/// The deepest nesting of parentheses and unary signs.
pub const MAX_DEPTH: usize = 32;
/// The largest magnitude of any value (10^15: integers below it are exact in `f64`).
pub const MAX_VALUE: f64 = 1e15;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Token {
    Num(f64),
    Op(char),
    Open,
    Close,
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => i += 1,
            '0'..='9' | '.' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.' || (chars[i] == ',' && is_digit_group(&chars, i))) {
                    i += 1;
                }
                let s: String = chars[start..i].iter().filter(|&&c| c != ',').collect();
                let v: f64 = s.parse().map_err(|_| format!("error: {s:?} is not a number"))?;
                out.push(Token::Num(v));
            }
            '+' | '-' | '/' | '^' | '÷' | '×' | 'x' | 'X' | '−' | '–' => {
                let op = match c {
                    '÷' => '/',
                    '×' | 'x' | 'X' => '*',
                    '−' | '–' => '-',
                    c => c,
                };
                out.push(Token::Op(op));
                i += 1;
            }
            '*' => {
                if chars.get(i + 1) == Some(&'*') {
                    out.push(Token::Op('^'));
                    i += 2;
                } else {
                    out.push(Token::Op('*'));
                    i += 1;
                }
            }
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            c => return Err(format!("error: the calculator does not know {c:?}; it takes numbers, + - * / ^ and parentheses")),
        }
    }
    Ok(out)
}

/// A comma between digits with exactly three digits after it is a thousands separator.
fn is_digit_group(chars: &[char], i: usize) -> bool {
    chars[i] == ','
        && i > 0
        && chars[i - 1].is_ascii_digit()
        && chars.len() >= i + 4
        && chars[i + 1..i + 4].iter().all(char::is_ascii_digit)
        && chars.get(i + 4).is_none_or(|c| !c.is_ascii_digit())
}

struct Parser {
    toks: Vec<Token>,
    at: usize,
    depth: usize,
}

fn checked(v: f64) -> Result<f64, String> {
    if v.is_nan() {
        Err("error: the result is not a real number".into())
    } else if !v.is_finite() || v.abs() > MAX_VALUE {
        Err("error: the number is too large (the calculator's limit is 10^15)".into())
    } else {
        Ok(v)
    }
}

impl Parser {
    fn peek(&self) -> Option<Token> {
        self.toks.get(self.at).copied()
    }

    fn expr(&mut self) -> Result<f64, String> {
        let mut v = self.term()?;
        while let Some(Token::Op(op @ ('+' | '-'))) = self.peek() {
            self.at += 1;
            let r = self.term()?;
            v = checked(if op == '+' { v + r } else { v - r })?;
        }
        Ok(v)
    }

    fn term(&mut self) -> Result<f64, String> {
        let mut v = self.power()?;
        while let Some(Token::Op(op @ ('*' | '/'))) = self.peek() {
            self.at += 1;
            let r = self.power()?;
            v = if op == '*' {
                checked(v * r)?
            } else if r == 0.0 {
                return Err("error: division by zero".into());
            } else {
                checked(v / r)?
            };
        }
        Ok(v)
    }

    fn power(&mut self) -> Result<f64, String> {
        let base = self.unary()?;
        if let Some(Token::Op('^')) = self.peek() {
            self.at += 1;
            let exp = self.power()?;
            if base == 0.0 && exp < 0.0 {
                return Err("error: division by zero".into());
            }
            // Bound the work and the size before computing: |base|^exp ≤ 10^15.
            if base.abs() > 1.0 && exp * base.abs().log10() > 15.0 {
                return Err("error: the number is too large (the calculator's limit is 10^15)".into());
            }
            return checked(base.powf(exp));
        }
        Ok(base)
    }

    fn unary(&mut self) -> Result<f64, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("error: the expression nests more than {MAX_DEPTH} deep"));
        }
        let v = match self.peek() {
            Some(Token::Op('-')) => {
                self.at += 1;
                -self.unary()?
            }
            Some(Token::Op('+')) => {
                self.at += 1;
                self.unary()?
            }
            Some(Token::Num(v)) => {
                self.at += 1;
                checked(v)?
            }
            Some(Token::Open) => {
                self.at += 1;
                let v = self.expr()?;
                if self.peek() != Some(Token::Close) {
                    return Err("error: a parenthesis is not closed".into());
                }
                self.at += 1;
                v
            }
            Some(Token::Close) => return Err("error: a closing parenthesis has nothing to close".into()),
            Some(Token::Op(op)) => return Err(format!("error: {op:?} needs a number before and after it")),
            None => return Err("error: the expression ends too early".into()),
        };
        self.depth -= 1;
        Ok(v)
    }
}

/// Evaluates `text`; the value, or the error message the model sees (`error: ...`).
pub fn eval(text: &str) -> Result<f64, String> {
    if text.chars().count() > MAX_INPUT {
        return Err(format!("error: the expression is longer than {MAX_INPUT} characters"));
    }
    let toks = tokens(text)?;
    if toks.is_empty() {
        return Err("error: the expression is empty".into());
    }
    let mut p = Parser { toks, at: 0, depth: 0 };
    let v = p.expr()?;
    match p.peek() {
        None => Ok(v),
        Some(Token::Close) => Err("error: a closing parenthesis has nothing to close".into()),
        Some(_) => Err("error: two numbers without an operator between them".into()),
    }
}

/// A value as the calculator prints it: integers in full, other numbers to 10 significant
/// digits without trailing zeros (`0.1 + 0.2` prints `0.3`).
pub fn format(v: f64) -> String {
    let v = if v == 0.0 { 0.0 } else { v }; // no "-0"
    if v.fract() == 0.0 {
        return format!("{}", v as i64);
    }
    let digits = (9 - v.abs().log10().floor() as i32).clamp(0, 15) as usize;
    let s = format!("{v:.digits$}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" || s.is_empty() {
        "0".into()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calc(s: &str) -> String {
        eval(s).map(format).unwrap_or_else(|e| e)
    }

    #[test]
    fn arithmetic_with_precedence() {
        assert_eq!(calc("12 + 7"), "19");
        assert_eq!(calc("2 + 3 * 4"), "14");
        assert_eq!(calc("(2 + 3) * 4"), "20");
        assert_eq!(calc("2 ^ 3 ^ 2"), "512");
        assert_eq!(calc("2 ** 10"), "1024");
        assert_eq!(calc("-3 - -4"), "1");
        assert_eq!(calc("7 / 2"), "3.5");
        assert_eq!(calc("1 / 3"), "0.3333333333");
        assert_eq!(calc("0.1 + 0.2"), "0.3");
        assert_eq!(calc("12 x 3"), "36");
        assert_eq!(calc("12 × 3 ÷ 4"), "9");
        assert_eq!(calc("1,000 + 1"), "1001");
        assert_eq!(calc("2 ^ -1"), "0.5");
        assert_eq!(calc("99999 * 9999"), "999890001");
    }

    #[test]
    fn errors_are_messages() {
        assert_eq!(calc("1 / 0"), "error: division by zero");
        assert_eq!(calc("0 ^ -2"), "error: division by zero");
        assert!(calc("10 ^ 16").contains("too large"));
        assert!(calc("9 ^ 99999999").contains("too large"));
        assert!(calc("99999999 * 99999999").contains("too large"));
        assert!(calc("(-8) ^ 0.5").contains("not a real number"));
        assert!(calc("(1 + 2").contains("not closed"));
        assert!(calc("1 + 2)").contains("nothing to close"));
        assert!(calc("1 +").contains("ends too early"));
        assert!(calc("1 2").contains("without an operator"));
        assert!(calc("import os").contains("does not know"));
        assert!(calc("").contains("empty"));
        assert!(calc(&"(".repeat(100)).contains("nests"));
        assert!(calc(&"1+".repeat(150)).contains("longer than"));
        assert!(calc("1..2").contains("not a number"));
    }
}
