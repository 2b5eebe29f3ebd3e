provider "aws" {
  region = var.region

  # Every resource that supports tags gets these; Name tags are set per resource.
  default_tags {
    tags = local.common_tags
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_availability_zones" "available" {
  state = "available"
}

locals {
  common_tags = merge(
    {
      Project     = "p2pchat"
      Deployment  = var.name
      ManagedBy   = "terraform"
      Environment = var.environment
    },
    var.extra_tags,
  )

  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
}
