# Mutual TLS between the services. Auth, messaging and profile act for whichever user a gRPC call
# names, so each takes calls only from the services that call it, over TLS with a certificate on
# both sides from one internal authority. Every service is given its identity from a secret of its
# own, three JSON keys passed by ECS through the task definition's `secrets` (settings.tf):
#
#   ca    the authorities it trusts (PEM, one or more)
#   cert  its certificate, naming `<service>.realchat.internal` (serverAuth and clientAuth)
#   key   its private key (PKCS#8 PEM)
#
# By default Terraform is the authority: one P-256 key and self-signed certificate per name in
# internal_tls_authorities (the first issues, all are trusted), one key and certificate per
# service. The keys live in the Terraform state, as the generated passwords do. Certificates are
# reissued by any apply in their last 90 days (the authorities' in their last year, with the same
# key and name, so what they issued stays valid); each service rolls onto its new certificate, as
# a digest of it is a label of its container (main.tf). With internal_tls_secrets, the operator's
# own secrets are used instead and nothing here is created.

locals {
  internal_tls_generated = var.internal_tls_secrets == null

  # The binaries expect their certificates under this domain, whatever internal_domain is.
  internal_tls_domain = "realchat.internal"

  # An authority lives ten years and is renewed by an apply in its last; a certificate lives a
  # year and is renewed by an apply in its last 90 days. Hours, as the tls provider counts.
  internal_ca_hours           = 10 * 365 * 24
  internal_ca_renewal_hours   = 365 * 24
  internal_cert_hours         = 365 * 24
  internal_cert_renewal_hours = 90 * 24

  internal_tls_authorities = local.internal_tls_generated ? toset(var.internal_tls_authorities) : toset([])
  internal_tls_issuer      = var.internal_tls_authorities[0]
  internal_tls_services    = local.internal_tls_generated ? local.services : toset([])

  # Every authority in internal_tls_authorities: a new name is trusted by every service an apply
  # before it issues any certificate, and an old one an apply after it issued the last.
  internal_tls_ca_pem = join("", [for name in var.internal_tls_authorities : tls_self_signed_cert.internal_ca[name].cert_pem if local.internal_tls_generated])

  # Each service's secret: generated here, or the operator's own.
  internal_tls_secret_arn = merge(
    { for name, secret in aws_secretsmanager_secret.internal_tls : name => secret.arn },
    try(var.internal_tls_secrets.secret_arns, {}),
  )

  # What the execution roles may decrypt the operator's secrets with, if not aws/secretsmanager.
  internal_tls_kms_key_arn = try(var.internal_tls_secrets.kms_key_arn, null)

  # A digest of what a service trusts and presents: when either changes, so does its task
  # definition, and ECS replaces its tasks, which read the secret anew as they start. The
  # operator's own secrets have none: a new deployment picks up what they were changed to.
  internal_tls_labels = {
    for name, cert in tls_locally_signed_cert.internal : name => {
      "realchat.internal-tls" = sha256("${local.internal_tls_ca_pem}${cert.cert_pem}")
    }
  }
}

# --- The authorities -------------------------------------------------------------------------------

resource "tls_private_key" "internal_ca" {
  for_each = local.internal_tls_authorities

  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_self_signed_cert" "internal_ca" {
  for_each = local.internal_tls_authorities

  private_key_pem       = tls_private_key.internal_ca[each.key].private_key_pem
  is_ca_certificate     = true
  set_subject_key_id    = true
  validity_period_hours = local.internal_ca_hours
  early_renewal_hours   = local.internal_ca_renewal_hours
  allowed_uses          = ["cert_signing", "crl_signing"]

  subject {
    common_name  = "${var.name} internal CA ${each.key}"
    organization = "RealChat"
  }
}

# --- One identity per service ----------------------------------------------------------------------

resource "tls_private_key" "internal" {
  for_each = local.internal_tls_services

  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "internal" {
  for_each = local.internal_tls_services

  private_key_pem = tls_private_key.internal[each.key].private_key_pem
  dns_names       = ["${each.key}.${local.internal_tls_domain}"]

  subject {
    common_name  = each.key
    organization = "RealChat"
  }
}

resource "tls_locally_signed_cert" "internal" {
  for_each = local.internal_tls_services

  cert_request_pem      = tls_cert_request.internal[each.key].cert_request_pem
  ca_private_key_pem    = tls_private_key.internal_ca[local.internal_tls_issuer].private_key_pem
  ca_cert_pem           = tls_self_signed_cert.internal_ca[local.internal_tls_issuer].cert_pem
  validity_period_hours = local.internal_cert_hours
  early_renewal_hours   = local.internal_cert_renewal_hours
  allowed_uses          = ["digital_signature", "server_auth", "client_auth"]
}

resource "aws_secretsmanager_secret" "internal_tls" {
  #checkov:skip=CKV2_AWS_57:Generated by Terraform and renewed by it (early renewal on apply, the procedure in infra/README.md); a rotation Lambda would have to be the authority and roll the services.
  for_each = local.internal_tls_services

  name                    = "${var.name}/${each.key}/internal-tls"
  description             = "${var.name}: ${each.key}'s internal TLS identity (ca: the authorities it trusts, cert: its certificate, key: its private key)"
  kms_key_id              = aws_kms_key.auth_kek.arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = merge(local.tags, { "realchat:service" = each.key })
}

resource "aws_secretsmanager_secret_version" "internal_tls" {
  for_each = local.internal_tls_services

  secret_id = aws_secretsmanager_secret.internal_tls[each.key].id
  secret_string = jsonencode({
    ca   = local.internal_tls_ca_pem
    cert = tls_locally_signed_cert.internal[each.key].cert_pem
    key  = tls_private_key.internal[each.key].private_key_pem_pkcs8
  })
}
