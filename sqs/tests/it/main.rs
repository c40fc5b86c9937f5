//! weir-sqs integration tests.
