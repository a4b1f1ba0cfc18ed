# The whole topology in VMs: PostgreSQL, Redis, Apache Kafka in KRaft mode and every RealChat
# service through the NixOS module, with two delivery replicas on two machines. Two users chat
# with the `realchat` command line, before and after one delivery replica is killed. The backend
# also runs Prometheus, scraping its services with the repository's alert rules.
{ module, packages }:

let
  machines = import ./common.nix { inherit module packages; };
in
{
  name = "realchat-topology";

  nodes = {
    inherit (machines) client;
    backend = {
      imports = [ machines.backend ];
      services.prometheus.enable = true;
      services.realchat.prometheus.enable = true;
    };
    delivery1 = machines.delivery;
    delivery2 = machines.delivery;
  };

  # Kept in its own file so nixos-tests/check.sh can type-check it against the driver's API.
  testScript = builtins.readFile ./topology.py;
}
