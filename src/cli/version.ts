/** The package version, read once from package.json so --version and the banner cannot disagree with it. */
import pkg from "../../package.json" with { type: "json" };

export const VERSION: string = pkg.version;
