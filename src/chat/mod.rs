//! Duo Chat's classic ReAct agent (`POST /v2/chat/agent`): the tools the
//! model may ask Rails to run, the prompt built from the conversation, and
//! the parsing of the model's Thought/Action/Final Answer text into the
//! NDJSON events Rails consumes. Tools run in Rails; the gateway only decides
//! which ones to offer and reports the model's choice.

pub mod context;
pub mod ndjson;
pub mod react;
pub mod tools;
