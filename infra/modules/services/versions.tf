terraform {
  # terraform_data (the bootstrap run) needs 1.4; the other modules ask for 1.5 as well.
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
    # random_bytes (auth's key-encryption keys) is new in 3.6.
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
    # The internal TLS identities; a certificate due for early renewal is seen on refresh since 4.0.4.
    tls = {
      source  = "hashicorp/tls"
      version = ">= 4.0.4, < 5.0.0"
    }
  }
}
