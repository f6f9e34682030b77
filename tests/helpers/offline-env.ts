/**
 * Preloaded before every test file (bunfig.toml): no SDK in a test, nor in a daemon a test starts (children inherit
 * the environment), may look for credentials at a cloud metadata address. Every store in the suites has an explicit
 * loopback endpoint and keys; this makes sure a mistake there fails instead of reaching off the machine.
 */
process.env.AWS_EC2_METADATA_DISABLED = "true";
// The Azure SDK's managed-identity lookup has no off switch; the azure backend only ever uses explicit keys or SAS.
