{
  description = "RealChat: real-time messaging services on PostgreSQL, Kafka and Redis";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

    crane.url = "github:ipetkov/crane";

    # rust-toolchain.toml pins one exact release (1.95.0) for rustup, CI and Nix alike. A NixOS
    # release branch carries whichever rustc it branched with and only takes fixes afterwards,
    # so it cannot be relied on to be that release (older, or newer after a backport); the
    # toolchain comes from rust-overlay, read from the toolchain file itself.
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, crane, rust-overlay }:
    let
      inherit (nixpkgs) lib;

      systems = [ "x86_64-linux" "aarch64-linux" ];

      # OCI labels: the commit, or the commit a dirty tree started from.
      revision = self.rev or self.dirtyRev or "unknown";

      perSystem = lib.genAttrs systems (system:
        let
          pkgs = import nixpkgs {
            inherit system;
            overlays = [ rust-overlay.overlays.default ];
          };
          built = import ./nix/packages.nix { inherit pkgs crane revision; };
          vmTest = file: pkgs.testers.runNixOSTest (import file {
            module = self.nixosModules.default;
            packages = built.packages;
          });
        in
        {
          inherit pkgs built;
          vmTests = {
            topology = vmTest ./nixos-tests/topology.nix;
            kafka-outage = vmTest ./nixos-tests/kafka-outage.nix;
          };
        });
    in
    {
      packages = lib.mapAttrs (_: system: system.built.packages) perSystem;

      checks = lib.mapAttrs (_: system: system.built.checks // system.vmTests) perSystem;

      devShells = lib.mapAttrs (_: system: { default = system.built.devShell; }) perSystem;

      formatter = lib.mapAttrs (_: system: system.pkgs.nixpkgs-fmt) perSystem;

      # services.realchat.<service>; packages default to this flake's builds for the host.
      nixosModules.default = { pkgs, ... }: {
        imports = [ ./nix/module.nix ];
        services.realchat.packages = lib.mkDefault (self.packages.${pkgs.stdenv.hostPlatform.system} or { });
      };
    };
}
