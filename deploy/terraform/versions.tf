terraform {
  # 1.11 brings write-only arguments: the coordinator's private key goes to SSM
  # through `value_wo` and is never written to the plan or the state.
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # value_wo on aws_ssm_parameter is available in every 6.x release from 6.8.
      version = ">= 6.8, < 7.0"
    }
    # The cluster's database password (random_password); in the lock file
    # like the AWS provider, although a single coordinator creates none.
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6, < 4.0"
    }
  }
}
