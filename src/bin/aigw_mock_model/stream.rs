//! The streaming body: a hand-written `Stream` that paces SSE chunks.
//!
//! Built for 10,000 concurrent slow streams on two cores: a stream is polled
//! by its connection's task (no task of its own), owns at most one timer that
//! is re-armed rather than re-allocated, and renders each chunk when it is due
//! (one buffer per token). Text is walked with a cursor and counted tokens are
//! generated, so nothing proportional to the reply length is held.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::{
    observe::StreamGuard,
    render::{ChunkWriter, DONE},
    reply::{Content, Reply, token_end},
};

/// One step of a script.
enum Step {
    /// A token: paced by time to first token / inter-token delay.
    Token(Bytes),
    /// Finish, usage and `[DONE]` chunks: sent right after the last token.
    Now(Bytes),
    /// Abort the body (paced like a token): hyper then drops the connection
    /// without the terminating chunk.
    Abort,
    /// The error that aborts the body, after a flush.
    Fail,
    End,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Tokens,
    Finish,
    Usage,
    Done,
    End,
}

/// The chunk sequence of one streaming response.
pub struct Script {
    writer: ChunkWriter,
    content: Content,
    finish_reason: &'static str,
    completion_tokens: u64,
    include_usage: bool,
    /// Abort after this many tokens (`reset` fault).
    reset_after: Option<u64>,
    phase: Phase,
    emitted: u64,
    /// Text: byte cursor. Tools: byte cursor in the current call's arguments.
    pos: usize,
    /// Tools: current call, and whether its opening chunk went out.
    call: usize,
    opened: bool,
}

impl Script {
    pub fn new(
        writer: ChunkWriter,
        reply: Reply,
        include_usage: bool,
        reset_after: Option<u64>,
    ) -> Script {
        Script {
            writer,
            content: reply.content,
            finish_reason: reply.finish_reason,
            completion_tokens: reply.completion_tokens,
            include_usage,
            reset_after,
            phase: Phase::Tokens,
            emitted: 0,
            pos: 0,
            call: 0,
            opened: false,
        }
    }

    fn next_token(&mut self) -> Option<Bytes> {
        let first = self.emitted == 0;
        match &self.content {
            Content::Text(text) => {
                let end = token_end(text, self.pos)?;
                let chunk = self.writer.token(&text[self.pos..end], first);
                self.pos = end;
                Some(chunk)
            }
            Content::Counted(n) => {
                let i = self.emitted;
                (i < *n).then(|| self.writer.counted(i, i + 1 == *n, first))
            }
            Content::Tools(calls) => loop {
                let call = calls.get(self.call)?;
                if !self.opened {
                    self.opened = true;
                    return Some(self.writer.tool_open(self.call, call, first));
                }
                if self.pos < call.arguments.len() {
                    let end = call.piece_end(self.pos);
                    let chunk = self
                        .writer
                        .tool_arguments(self.call, &call.arguments[self.pos..end]);
                    self.pos = end;
                    return Some(chunk);
                }
                self.call += 1;
                self.opened = false;
                self.pos = 0;
            },
        }
    }

    fn next(&mut self) -> Step {
        loop {
            match self.phase {
                Phase::Tokens => {
                    let limit_hit = self.reset_after.is_some_and(|n| self.emitted >= n);
                    match (limit_hit, self.next_token()) {
                        (false, Some(chunk)) => {
                            self.emitted += 1;
                            return Step::Token(chunk);
                        }
                        _ if self.reset_after.is_some() => {
                            self.phase = Phase::End;
                            return Step::Abort;
                        }
                        _ => self.phase = Phase::Finish,
                    }
                }
                Phase::Finish => {
                    self.phase = Phase::Usage;
                    return Step::Now(self.writer.finish(self.finish_reason));
                }
                Phase::Usage => {
                    self.phase = Phase::Done;
                    if self.include_usage {
                        return Step::Now(self.writer.usage(self.completion_tokens));
                    }
                }
                Phase::Done => {
                    self.phase = Phase::End;
                    return Step::Now(Bytes::from_static(DONE));
                }
                Phase::End => return Step::End,
            }
        }
    }
}

/// A [`Script`] played with delays; the response body of a stream.
pub struct Paced {
    script: Script,
    /// The step waiting for its timer.
    staged: Option<Step>,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    ttft: Duration,
    inter_token: Duration,
    any_token_sent: bool,
    guard: StreamGuard,
}

impl Paced {
    pub fn new(script: Script, ttft: Duration, inter_token: Duration, guard: StreamGuard) -> Paced {
        Paced {
            script,
            staged: None,
            timer: None,
            armed: false,
            ttft,
            inter_token,
            any_token_sent: false,
            guard,
        }
    }
}

impl Stream for Paced {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let step = match this.staged.take() {
            Some(step) => step,
            None => this.script.next(),
        };
        if matches!(step, Step::Token(_) | Step::Abort) {
            let delay = if this.any_token_sent {
                this.inter_token
            } else {
                this.ttft
            };
            if !delay.is_zero() {
                if !this.armed {
                    let deadline = Instant::now() + delay;
                    match &mut this.timer {
                        Some(t) => t.as_mut().reset(deadline),
                        None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                    this.armed = true;
                }
                if let Some(t) = &mut this.timer
                    && t.as_mut().poll(cx).is_pending()
                {
                    this.staged = Some(step);
                    return Poll::Pending;
                }
                this.armed = false;
            }
            this.any_token_sent = true;
        }
        match step {
            Step::Token(b) | Step::Now(b) => Poll::Ready(Some(Ok(b))),
            Step::Abort => {
                // Return Pending once so hyper flushes the tokens already sent.
                this.staged = Some(Step::Fail);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Step::Fail => {
                this.guard.finish();
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "mock fault: reset mid-stream",
                ))))
            }
            Step::End => {
                this.guard.finish();
                Poll::Ready(None)
            }
        }
    }
}
