//! The OpenAPI document, generated from the handlers and the wire types, served at
//! `/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{apps, certs, hosts, logs, machine_ops, machines, secrets};

/// The whole `/v1` API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Godwit Machines API", version = "1.0",
         description = "Fly-shaped Machines API. Send `Authorization: Bearer <token>`."),
    paths(
        crate::routes::healthz,
        apps::create_app, apps::list_apps, apps::get_app, apps::delete_app,
        logs::app_logs, logs::machine_logs,
        machines::create_machine, machines::list_machines, machines::get_machine,
        machines::update_machine, machines::destroy_machine,
        machine_ops::start, machine_ops::stop, machine_ops::suspend, machine_ops::restart, machine_ops::signal,
        machine_ops::wait, machine_ops::acquire_lease, machine_ops::get_lease,
        machine_ops::release_lease, machine_ops::cordon, machine_ops::uncordon,
        machine_ops::exec, machine_ops::events, machine_ops::get_metadata,
        machine_ops::set_metadata, machine_ops::delete_metadata,
        secrets::list_secrets, secrets::set_secrets, secrets::unset_secret,
        certs::add_custom, certs::add_acme, certs::list, certs::get, certs::delete,
        hosts::register_host, hosts::list_hosts,
    ),
    components(schemas(godwit_types::api::ErrorBody, hosts::HostInfo)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "apps"), (name = "machines"), (name = "secrets"), (name = "certificates"),
         (name = "hosts"),
         (name = "meta")),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub(crate) async fn serve_openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
