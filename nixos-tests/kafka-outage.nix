# The bench's `outage` scenario inside the VMs: direct load through the gateway while
# `systemctl stop apache-kafka` takes the broker away and `systemctl start` brings it back.
# Sends keep being accepted, messaging's outbox backlog grows, then drains to zero, and the
# checker finds every acknowledged message on its sockets, in order: 0 lost.
{ module, packages }:

let
  machines = import ./common.nix { inherit module packages; };
in
{
  name = "realchat-kafka-outage";

  nodes = {
    inherit (machines) backend;
    delivery1 = machines.delivery;
    delivery2 = machines.delivery;
  };

  testScript = builtins.readFile ./kafka-outage.py;
}
