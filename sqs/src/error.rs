//! [`SqsError`]: an SQS error as the JSON protocol returns it — an HTTP status, the error
//! shape's name in `__type` (botocore's exception class), the query protocol's code in the
//! `x-amzn-query-error` header (what `awsQueryCompatible` clients match on), whose fault it
//! is, and a message.

use weir_queue::QueueError;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SqsError {
    /// HTTP status.
    pub status: u16,
    /// The error shape (`QueueDoesNotExist`).
    pub code: &'static str,
    /// The query protocol's code (`AWS.SimpleQueueService.NonExistentQueue`).
    pub query_code: &'static str,
    /// The caller's fault (`Sender`) or ours (`Receiver`).
    pub sender_fault: bool,
    /// What went wrong.
    pub message: String,
}

impl SqsError {
    fn sender(code: &'static str, query_code: &'static str, message: String) -> SqsError {
        SqsError {
            status: 400,
            code,
            query_code,
            sender_fault: true,
            message,
        }
    }

    /// A parameter out of range or malformed.
    pub fn invalid_parameter(message: impl Into<String>) -> SqsError {
        SqsError::sender(
            "InvalidParameterValue",
            "InvalidParameterValue",
            message.into(),
        )
    }

    /// A required parameter is missing.
    pub fn missing_parameter(name: &str) -> SqsError {
        SqsError::sender(
            "MissingParameter",
            "MissingParameter",
            format!("The request must contain the parameter {name}."),
        )
    }

    /// No such queue.
    pub fn no_queue(name: &str) -> SqsError {
        SqsError::sender(
            "QueueDoesNotExist",
            "AWS.SimpleQueueService.NonExistentQueue",
            format!("The specified queue {name} does not exist."),
        )
    }

    /// A queue attribute name that does not exist.
    pub fn invalid_attribute_name(name: &str) -> SqsError {
        SqsError::sender(
            "InvalidAttributeName",
            "InvalidAttributeName",
            format!("Unknown Attribute {name}."),
        )
    }

    /// A queue attribute only CreateQueue sets.
    pub fn fixed_attribute(name: &str) -> SqsError {
        SqsError::sender(
            "InvalidAttributeName",
            "InvalidAttributeName",
            format!("{name} is set only when the queue is created."),
        )
    }

    /// A queue attribute value out of range.
    pub fn invalid_attribute_value(message: impl Into<String>) -> SqsError {
        SqsError::sender(
            "InvalidAttributeValue",
            "InvalidAttributeValue",
            message.into(),
        )
    }

    /// A receipt handle this server never issued.
    pub fn invalid_receipt(handle: &str) -> SqsError {
        SqsError::sender(
            "ReceiptHandleIsInvalid",
            "ReceiptHandleIsInvalid",
            format!("The input receipt handle \"{handle}\" is not a valid receipt handle."),
        )
    }

    /// A message whose lock is over (visibility changes need the current lock).
    pub fn not_inflight() -> SqsError {
        SqsError::sender(
            "MessageNotInflight",
            "AWS.SimpleQueueService.MessageNotInflight",
            "The message referred to isn't in flight.".into(),
        )
    }

    /// A body with characters SQS does not allow.
    pub fn invalid_contents(message: impl Into<String>) -> SqsError {
        SqsError::sender(
            "InvalidMessageContents",
            "InvalidMessageContents",
            message.into(),
        )
    }

    /// A batch problem: `code` is the shape, the query code its SQS-prefixed form.
    pub fn batch(code: &'static str, query_code: &'static str, message: String) -> SqsError {
        SqsError::sender(code, query_code, message)
    }

    /// An action this server does not implement.
    pub fn unsupported(action: &str) -> SqsError {
        SqsError::sender(
            "UnsupportedOperation",
            "AWS.SimpleQueueService.UnsupportedOperation",
            format!("{action} is not supported by Weir's SQS API."),
        )
    }

    /// A body that is not the JSON the action takes.
    pub fn malformed(message: impl Into<String>) -> SqsError {
        SqsError::sender("InvalidParameterValue", "MalformedInput", message.into())
    }

    /// Authentication failed (403).
    pub fn auth(code: &'static str, message: impl Into<String>) -> SqsError {
        SqsError {
            status: 403,
            code,
            query_code: code,
            sender_fault: true,
            message: message.into(),
        }
    }

    /// Our fault: the log failed, a transaction could not commit.
    pub fn internal(message: impl Into<String>) -> SqsError {
        SqsError {
            status: 500,
            code: "InternalError",
            query_code: "InternalError",
            sender_fault: false,
            message: message.into(),
        }
    }

    /// Briefly unable (503, which SDKs retry): a partition waits for a transaction's end.
    pub fn unavailable(message: impl Into<String>) -> SqsError {
        SqsError {
            status: 503,
            code: "ServiceUnavailable",
            query_code: "ServiceUnavailable",
            sender_fault: false,
            message: message.into(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "__type": format!("com.amazonaws.sqs#{}", self.code),
            "message": self.message,
        })
    }

    /// The `x-amzn-query-error` header's value.
    pub fn query_header(&self) -> String {
        let fault = if self.sender_fault {
            "Sender"
        } else {
            "Receiver"
        };
        format!("{};{fault}", self.query_code)
    }
}

impl From<QueueError> for SqsError {
    fn from(e: QueueError) -> SqsError {
        match &e {
            QueueError::StaleReceipt(_) => SqsError::not_inflight(),
            QueueError::BadReceipt(h) => SqsError::invalid_receipt(h),
            QueueError::InvalidSetting(_) => SqsError::invalid_attribute_value(e.to_string()),
            QueueError::UnknownQueue(q) => SqsError::no_queue(q),
            QueueError::QueueExists(_) => SqsError::sender(
                "QueueNameExists",
                "QueueAlreadyExists",
                "A queue already exists with the same name and a different value for attribute(s)"
                    .into(),
            ),
            QueueError::InvalidName { .. }
            | QueueError::InvalidMessage(_)
            | QueueError::InUse { .. } => SqsError::invalid_parameter(e.to_string()),
            QueueError::Undecided { .. } => SqsError::unavailable(e.to_string()),
            QueueError::CorruptState { .. } | QueueError::Log(_) | QueueError::Coord(_) => {
                tracing::warn!(error = %e, "SQS request failed");
                SqsError::internal(e.to_string())
            }
        }
    }
}
