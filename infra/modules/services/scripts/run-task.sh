#!/usr/bin/env bash
# Runs the bootstrap task once and fails unless every container in it exited 0, so that Terraform
# updates the services only after the roles, databases, topics and migrations are in place.
# Called by Terraform (bootstrap.tf) with CLUSTER, TASK_DEFINITION, SUBNETS (comma-separated),
# SECURITY_GROUP and REGION in the environment.
set -euo pipefail
: "${CLUSTER:?}" "${TASK_DEFINITION:?}" "${SUBNETS:?}" "${SECURITY_GROUP:?}" "${REGION:?}"

ecs() { aws ecs --region "$REGION" "$@"; }

task=$(ecs run-task --cluster "$CLUSTER" --task-definition "$TASK_DEFINITION" \
  --launch-type FARGATE --count 1 --started-by realchat-bootstrap \
  --network-configuration "awsvpcConfiguration={subnets=[$SUBNETS],securityGroups=[$SECURITY_GROUP],assignPublicIp=DISABLED}" \
  --query 'tasks[0].taskArn' --output text)
if [[ -z "$task" || "$task" == "None" ]]; then
  echo "the bootstrap task did not start" >&2
  exit 1
fi
echo "bootstrap task started: $task"

# One `wait tasks-stopped` gives up after 10 minutes; a first run pulls images and migrates empty
# databases, so allow three of them.
for _ in 1 2 3; do
  if ecs wait tasks-stopped --cluster "$CLUSTER" --tasks "$task"; then
    break
  fi
done

status=$(ecs describe-tasks --cluster "$CLUSTER" --tasks "$task" --query 'tasks[0].lastStatus' --output text)
if [[ "$status" != "STOPPED" ]]; then
  echo "the bootstrap task is still $status after 30 minutes; see its logs" >&2
  exit 1
fi
ecs describe-tasks --cluster "$CLUSTER" --tasks "$task" \
  --query 'tasks[0].containers[].[name, exitCode, reason]' --output text
failed=$(ecs describe-tasks --cluster "$CLUSTER" --tasks "$task" \
  --query 'length(tasks[0].containers[?exitCode != `0`])' --output text)
if [[ "$failed" != "0" ]]; then
  echo "the bootstrap task failed ($failed containers did not exit 0): $(ecs describe-tasks --cluster "$CLUSTER" --tasks "$task" --query 'tasks[0].stoppedReason' --output text)" >&2
  exit 1
fi
echo "bootstrap finished"
