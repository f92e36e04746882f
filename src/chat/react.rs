//! Reading the model's ReAct text as it streams in.
//!
//! The output is read as if it began with `Thought:` (the prompt's prefill
//! ends there). A `Final Answer:` is streamed to the user as it grows; an
//! `Action:` + `Action Input:` pair becomes one tool request once the model
//! has finished; anything else is passed on whole as `unknown`. For families
//! that think aloud (`strip_reasoning`, Qwen), a leading `<think>…</think>`
//! block, or an orphan `</think>` in the first 80 characters, is removed
//! first, so nothing is streamed until that is decided.

const FINAL_ANSWER: &str = "Final Answer:";
const ACTION: &str = "Action:";
const ACTION_INPUT: &str = "Action Input:";
const THOUGHT: &str = "Thought:";
const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";
/// An orphan `</think>` counts only when it starts within this many bytes.
const ORPHAN_WINDOW: usize = 80;

/// What the whole output turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The answer text not yet streamed (usually empty).
    FinalAnswer {
        rest: String,
    },
    Action {
        tool: String,
        tool_input: String,
        thought: String,
    },
    Unknown(String),
}

/// Accumulates streamed text and yields the final answer incrementally.
#[derive(Debug, Default)]
pub struct ReactParser {
    raw: String,
    strip_reasoning: bool,
    /// Bytes of the (trimmed) answer already handed out.
    emitted: usize,
}

impl ReactParser {
    pub fn new(strip_reasoning: bool) -> Self {
        Self {
            strip_reasoning,
            ..Self::default()
        }
    }

    /// Adds a chunk; returns new final-answer text, if any.
    pub fn push(&mut self, chunk: &str) -> Option<String> {
        self.raw.push_str(chunk);
        let answer = final_answer(self.visible(false)?)?;
        let new = answer
            .get(self.emitted..)
            .filter(|s| !s.is_empty())?
            .to_string();
        self.emitted = answer.len();
        Some(new)
    }

    /// The output once the model has finished.
    pub fn finish(self) -> Outcome {
        let visible = self.visible(true).unwrap_or_default().to_string();
        if let Some(answer) = final_answer(&visible) {
            let rest = answer.get(self.emitted..).unwrap_or_default().to_string();
            return Outcome::FinalAnswer { rest };
        }
        parse_action(&visible).unwrap_or(Outcome::Unknown(visible))
    }

    /// The text after reasoning removal; `None` while that is undecided.
    fn visible(&self, ended: bool) -> Option<&str> {
        if !self.strip_reasoning {
            return Some(&self.raw);
        }
        let trimmed = self.raw.trim_start();
        if trimmed.starts_with(THINK_OPEN) || THINK_OPEN.starts_with(trimmed) && !trimmed.is_empty()
        {
            return match trimmed.find(THINK_CLOSE) {
                Some(at) => Some(&trimmed[at + THINK_CLOSE.len()..]),
                None if ended => Some(&self.raw),
                None => None,
            };
        }
        match self.raw.find(THINK_CLOSE) {
            Some(at) if at < ORPHAN_WINDOW => Some(&self.raw[at + THINK_CLOSE.len()..]),
            _ if ended || self.raw.len() >= ORPHAN_WINDOW + THINK_CLOSE.len() => Some(&self.raw),
            _ => None,
        }
    }
}

/// The trimmed text after the first `Final Answer:`.
fn final_answer(text: &str) -> Option<&str> {
    text.find(FINAL_ANSWER)
        .map(|at| text[at + FINAL_ANSWER.len()..].trim())
}

fn unescape(s: &str) -> String {
    s.replace("\\_", "_")
}

/// `Action:` + `Action Input:` into a tool request.
fn parse_action(output: &str) -> Option<Outcome> {
    if !output.contains(ACTION) || !output.contains(ACTION_INPUT) {
        return None;
    }
    let text = if output.trim_start().starts_with(THOUGHT) {
        output.trim_start().to_string()
    } else {
        format!("{THOUGHT} {output}")
    };
    let after_action = &text[text.find(ACTION)? + ACTION.len()..];
    let tool_end = after_action.find("Action").unwrap_or(after_action.len());
    let tool = after_action[..tool_end]
        .trim()
        .trim_end_matches(|c: char| c.is_whitespace() || c == '-');
    let mut tool = unescape(tool);
    if tool == "MergeRequestReader" {
        tool = "merge_request_reader".to_string();
    }
    let mut tool_input = &text[text.find(ACTION_INPUT)? + ACTION_INPUT.len()..];
    // The stop sequence normally ends the output here; a server that
    // ignores `stop` must not smuggle an invented observation in.
    if let Some(at) = tool_input.find("Observation:") {
        tool_input = &tool_input[..at];
    }
    let after_thought = &text[THOUGHT.len()..];
    let thought_end = [
        after_thought.find("Action"),
        after_thought.find(FINAL_ANSWER),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(after_thought.len());
    Some(Outcome::Action {
        tool,
        tool_input: tool_input.trim().to_string(),
        thought: unescape(after_thought[..thought_end].trim()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&str], strip: bool) -> (Vec<String>, Outcome) {
        let mut p = ReactParser::new(strip);
        let deltas = chunks.iter().filter_map(|c| p.push(c)).collect();
        (deltas, p.finish())
    }

    #[test]
    fn final_answer_streams_incrementally() {
        let (deltas, end) = run(
            &[
                " I know this.\nFinal",
                " Answer:",
                " Hello",
                " world",
                "!\n",
            ],
            false,
        );
        assert_eq!(deltas, ["Hello", " world", "!"]);
        assert_eq!(
            end,
            Outcome::FinalAnswer {
                rest: String::new()
            }
        );
    }

    #[test]
    fn action_is_parsed_with_unescaping_and_mapping() {
        let (deltas, end) = run(
            &[
                " I need the issue\\_details.\nAction: issue\\_reader -\n",
                "Action Input: #12 please\n",
            ],
            false,
        );
        assert!(deltas.is_empty());
        assert_eq!(
            end,
            Outcome::Action {
                tool: "issue_reader".into(),
                tool_input: "#12 please".into(),
                thought: "I need the issue_details.".into(),
            }
        );
        let (_, end) = run(
            &["Thought: look\nAction: MergeRequestReader\nAction Input: !3\nObservation: made up"],
            false,
        );
        assert_eq!(
            end,
            Outcome::Action {
                tool: "merge_request_reader".into(),
                tool_input: "!3".into(),
                thought: "look".into(),
            }
        );
    }

    #[test]
    fn anything_else_is_unknown() {
        let (_, end) = run(&["Just some text", " without markers"], false);
        assert_eq!(
            end,
            Outcome::Unknown("Just some text without markers".into())
        );
        let (_, end) = run(&["Action: only half"], false);
        assert_eq!(end, Outcome::Unknown("Action: only half".into()));
    }

    #[test]
    fn reasoning_is_stripped_before_anything_streams() {
        let (deltas, end) = run(
            &[
                "<think>maybe Final Answer: no",
                "</think>",
                "Final Answer: yes",
            ],
            true,
        );
        assert_eq!(deltas, ["yes"]);
        assert_eq!(
            end,
            Outcome::FinalAnswer {
                rest: String::new()
            }
        );
        let (deltas, _) = run(&["scratch</think>Final Answer: ok"], true);
        assert_eq!(deltas, ["ok"]);
        // Without stripping the marker inside <think> would have leaked.
        let (deltas, _) = run(&["<think>Final Answer: no</think>Final Answer: yes"], false);
        assert_eq!(deltas, ["no</think>Final Answer: yes"]);
        // A short answer with no think block is released at the end.
        let (deltas, end) = run(&["Final Answer: hi"], true);
        assert!(deltas.is_empty());
        assert_eq!(end, Outcome::FinalAnswer { rest: "hi".into() });
    }
}
