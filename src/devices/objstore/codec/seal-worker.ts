// The worker entry of the objstore codec's pool (seal-jobs.ts); listed in scripts/build-binary.ts.
import { serveJobs } from "../../../shared/worker-jobs.ts";
import { sealJobs } from "./seal-jobs.ts";

serveJobs(sealJobs);
