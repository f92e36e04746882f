//! The provider every feature calls: it hands each call to the platform's
//! own provider, chosen by the target's [`Platform`]. One HTTP client (and
//! so one trust store and client certificate) serves them all.

use std::sync::Arc;

use super::{
    ChatRequest, Completion, EventStream, ModelError, ModelProvider, TextRequest,
    anthropic::Anthropic,
    aws_auth::AwsAuth,
    bedrock::Bedrock,
    client::SharedClient,
    google_auth::GoogleAuth,
    openai::OpenAiCompatible,
    target::{ModelTarget, Platform},
    vertex::Vertex,
};
use crate::config::ModelsConfig;

pub struct Platforms {
    client: SharedClient,
    openai: Arc<OpenAiCompatible>,
    anthropic: Anthropic,
    bedrock: Bedrock,
    vertex: Vertex,
}

impl Platforms {
    pub fn new(client: reqwest::Client, config: &ModelsConfig) -> Result<Self, String> {
        let client = SharedClient::new(client);
        let cloud = &config.cloud;
        Ok(Self {
            openai: Arc::new(OpenAiCompatible::new(
                client.clone(),
                &config.extra_headers,
            )?),
            anthropic: Anthropic::new(client.clone(), &config.extra_headers),
            bedrock: Bedrock::new(
                client.clone(),
                AwsAuth::new(
                    client.clone(),
                    cloud.bedrock.bearer_token.clone(),
                    cloud.bedrock.region.as_ref().map(|r| r.value.clone()),
                ),
                cloud.bedrock.guardrail.clone(),
            ),
            vertex: Vertex::new(
                client.clone(),
                GoogleAuth::new(cloud.vertex.clone(), client.clone()),
            ),
            client,
        })
    }

    /// Replaces the HTTP client of every platform (new trust store after SIGHUP).
    pub fn set_client(&self, client: reqwest::Client) {
        self.client.set(client);
    }

    /// Forgets cached cloud credentials, so the next call reads rotated
    /// files (profiles, web identity token, service-account key) again.
    pub async fn forget_credentials(&self) {
        self.bedrock.forget_credentials().await;
        self.vertex.forget_credentials().await;
    }

    fn provider(&self, target: &ModelTarget) -> &dyn ModelProvider {
        match target.platform {
            Platform::OpenAi(_) | Platform::Azure { .. } => self.openai.as_ref(),
            Platform::Anthropic => &self.anthropic,
            Platform::Bedrock { .. } => &self.bedrock,
            Platform::Vertex { .. } => &self.vertex,
        }
    }
}

#[async_trait::async_trait]
impl ModelProvider for Platforms {
    async fn chat(
        &self,
        target: &ModelTarget,
        request: &ChatRequest,
    ) -> Result<Completion, ModelError> {
        self.provider(target).chat(target, request).await
    }

    async fn chat_stream(
        &self,
        target: &ModelTarget,
        request: &ChatRequest,
    ) -> Result<EventStream, ModelError> {
        self.provider(target).chat_stream(target, request).await
    }

    async fn text(
        &self,
        target: &ModelTarget,
        request: &TextRequest,
    ) -> Result<Completion, ModelError> {
        self.provider(target).text(target, request).await
    }
}
