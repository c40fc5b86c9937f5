//! boto3 (PyPI), unmodified, against `weir serve`'s SQS API: the SQS documentation's flows
//! (`tests/interop/sqs_boto3.py`), and SigV4 with configured credentials.

use std::process::Command;

use crate::kafka_interop::{run_client_script, run_client_script_with, venv_python};

#[test]
fn boto3_runs_the_sqs_flows_unmodified() -> anyhow::Result<()> {
    let mut python = Command::new(venv_python()?);
    python.env("PYTHONUNBUFFERED", "1");
    run_client_script(python, "sqs_boto3.py", "boto3: ok", |s| s.sqs.clone())
}

#[test]
fn boto3_signs_with_the_configured_credentials_and_wrong_ones_are_refused() -> anyhow::Result<()> {
    let mut python = Command::new(venv_python()?);
    python.env("PYTHONUNBUFFERED", "1").env("SQS_MODE", "auth");
    run_client_script_with(
        python,
        &["--sqs-credentials", "AKIDWEIR:s3cret"],
        "sqs_boto3.py",
        "boto3 auth: ok",
        |s| s.sqs.clone(),
    )
}
