import { serveJobs } from "../../src/shared/worker-jobs.ts";
import { poolTestJobs } from "./pool-jobs.ts";

serveJobs(poolTestJobs);
