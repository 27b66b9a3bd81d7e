//! `/v1/apps/{app}/certificates`: the calls behind `godwit certs`.

use godwit_types::api::{
    AcmeCertificateRequest, Certificate, CustomCertificateRequest, ListCertificatesResponse,
};
use reqwest::Method;

use super::{ApiClient, CallError};

// === impl ApiClient ===

impl ApiClient {
    pub async fn list_certs(&self, app: &str) -> Result<ListCertificatesResponse, CallError> {
        self.get(&format!("/v1/apps/{app}/certificates")).await
    }

    pub async fn get_cert(&self, app: &str, hostname: &str) -> Result<Certificate, CallError> {
        self.get(&format!("/v1/apps/{app}/certificates/{hostname}"))
            .await
    }

    /// Uploads a certificate and its key; the answer never holds the key.
    pub async fn import_cert(
        &self,
        app: &str,
        req: &CustomCertificateRequest,
    ) -> Result<Certificate, CallError> {
        self.post(&format!("/v1/apps/{app}/certificates/custom"), req)
            .await
    }

    /// Starts an ACME order; the certificate answered is `pending`.
    pub async fn add_acme_cert(
        &self,
        app: &str,
        req: &AcmeCertificateRequest,
    ) -> Result<Certificate, CallError> {
        self.post(&format!("/v1/apps/{app}/certificates/acme"), req)
            .await
    }

    /// Deletes the certificate; the answer is the certificate as it was.
    pub async fn delete_cert(&self, app: &str, hostname: &str) -> Result<Certificate, CallError> {
        self.call(
            Method::DELETE,
            &format!("/v1/apps/{app}/certificates/{hostname}"),
            None,
        )
        .await
    }
}
