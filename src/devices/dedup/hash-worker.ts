/** Worker entry of the dedup device's jobs (hash-jobs.ts); listed in scripts/build-binary.ts. */
import { serveJobs } from "../../shared/worker-jobs.ts";
import { dedupJobs } from "./hash-jobs.ts";

serveJobs(dedupJobs);
