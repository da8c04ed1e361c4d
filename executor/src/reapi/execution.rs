//! The Execution service: submit an action, follow its operation until it is done.

use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    Digest, ExecuteRequest, ExecuteResponse, WaitExecutionRequest, digest_function,
    execution_client::ExecutionClient,
};
use bazel_remote_apis::google::longrunning::{Operation, operation};
use prost::Message;

use super::{Client, RemoteError};

impl Client {
    /// Executes `action` (already in the CAS with its command and input root) and waits
    /// up to `wait` for the result. A dropped operation stream is resumed with
    /// WaitExecution, as the API asks.
    pub async fn execute(
        &self,
        action: &Digest,
        wait: Duration,
    ) -> Result<ExecuteResponse, RemoteError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut client = ExecutionClient::new(self.channel.clone());
        let mut request = self.request(ExecuteRequest {
            instance_name: self.instance.clone(),
            skip_cache_lookup: false,
            action_digest: Some(action.clone()),
            digest_function: digest_function::Value::Sha256 as i32,
            ..ExecuteRequest::default()
        });
        request.set_timeout(wait);
        let mut stream = client
            .execute(request)
            .await
            .map_err(RemoteError::call("Execute"))?
            .into_inner();
        let mut name = String::new();
        loop {
            let next = tokio::time::timeout_at(deadline, stream.message()).await;
            let operation = match next {
                Err(_) => {
                    return Err(RemoteError::Protocol(format!(
                        "the action did not finish within {} s",
                        wait.as_secs()
                    )));
                }
                Ok(Ok(Some(operation))) => operation,
                // The stream ended or broke before the operation was done: resume it.
                Ok(Ok(None)) | Ok(Err(_)) if !name.is_empty() => {
                    let mut request = self.request(WaitExecutionRequest { name: name.clone() });
                    request.set_timeout(deadline - tokio::time::Instant::now());
                    stream = client
                        .wait_execution(request)
                        .await
                        .map_err(RemoteError::call("WaitExecution"))?
                        .into_inner();
                    continue;
                }
                Ok(Ok(None)) => {
                    return Err(RemoteError::Protocol(
                        "Execute ended without an operation".into(),
                    ));
                }
                Ok(Err(status)) => return Err(RemoteError::call("Execute")(status)),
            };
            name.clone_from(&operation.name);
            if let Some(response) = done(operation)? {
                return Ok(response);
            }
        }
    }
}

/// The response of a finished operation, `None` while it runs.
fn done(operation: Operation) -> Result<Option<ExecuteResponse>, RemoteError> {
    if !operation.done {
        return Ok(None);
    }
    match operation.result {
        Some(operation::Result::Response(any)) => ExecuteResponse::decode(any.value.as_slice())
            .map(Some)
            .map_err(|e| RemoteError::Protocol(format!("a malformed ExecuteResponse: {e}"))),
        Some(operation::Result::Error(status)) => Err(RemoteError::Protocol(format!(
            "the execution failed: {} (code {})",
            status.message, status.code
        ))),
        None => Err(RemoteError::Protocol(
            "the operation is done but has no result".into(),
        )),
    }
}
