import { AppError, invalidArgument } from "@lathe/kit";
import { ComputeBackend, type ComputeConfig } from "@lathe/proto/lathe/trainer/v1/trainer_service";

/** Where a job trains, as stored: a CPU job (local workers) or a GPU job (a local GPU slot or the Kubernetes runner). */
export interface JobCompute {
  backend: "cpu" | "cuda";
  /** The GPUs the job's pod asks for: 0 for a CPU job, 1 to 8 for a CUDA job. Absent in jobs made before GPU jobs (read as 0). */
  gpuCount?: number;
  /** A key of the cost table; for a CUDA job "" means any GPU of the node pool. */
  hardware: string;
}

/** The most GPUs one job may ask for (one node's worth). */
export const maxGpusPerJob = 8;

/**
 * The compute of a job as CreateFineTuningJob receives it. A GPU job (`COMPUTE_BACKEND_CUDA`, a
 * `gpu_count`, or a GPU hardware type) needs GPU slots: `gpusPerJob` is the most GPUs one job may
 * ask for here (0: no GPU slots; 1: this trainer's own GPU, LATHE_TRAINER_GPUS; 8: a Kubernetes
 * runner that takes GPU jobs). Unspecified is CUDA when there are GPU slots, else CPU, as the proto says.
 */
export function computeOf(c: ComputeConfig | undefined, hardwareTypes: readonly string[], gpusPerJob: number): JobCompute {
  const f = (name: string) => `fine_tuning_job.compute${name === "" ? "" : `.${name}`}`;
  const hardware = c?.hardware ?? "";
  if (hardware !== "" && !hardwareTypes.includes(hardware)) throw invalidArgument(f("hardware"), `${JSON.stringify(hardware)} is not in the cost table (${hardwareTypes.join(", ")})`);
  const gpuCount = c?.gpuCount ?? 0;
  if (!Number.isInteger(gpuCount) || gpuCount < 0 || gpuCount > maxGpusPerJob) throw invalidArgument(f("gpu_count"), `must be from 0 to ${maxGpusPerJob}, got ${gpuCount}`);
  const backend = c?.backend ?? ComputeBackend.COMPUTE_BACKEND_UNSPECIFIED;
  if (backend === ComputeBackend.COMPUTE_BACKEND_CPU) {
    if (gpuCount > 0) throw invalidArgument(f("gpu_count"), "must be 0 for COMPUTE_BACKEND_CPU");
    if (hardware !== "" && hardware !== "cpu") throw invalidArgument(f("hardware"), `${hardware} is a GPU type; COMPUTE_BACKEND_CPU trains on cpu`);
    return { backend: "cpu", gpuCount: 0, hardware: "cpu" };
  }
  if (backend !== ComputeBackend.COMPUTE_BACKEND_CUDA && backend !== ComputeBackend.COMPUTE_BACKEND_UNSPECIFIED) throw invalidArgument(f("backend"), `unknown value ${backend}`);
  const asksGpu = backend === ComputeBackend.COMPUTE_BACKEND_CUDA || gpuCount > 0 || (hardware !== "" && hardware !== "cpu");
  if (hardware === "cpu") {
    if (asksGpu) throw invalidArgument(f("hardware"), "cpu has no GPUs; leave it empty or name a GPU type for COMPUTE_BACKEND_CUDA");
    return { backend: "cpu", gpuCount: 0, hardware: "cpu" };
  }
  if (gpusPerJob === 0) {
    if (!asksGpu) return { backend: "cpu", gpuCount: 0, hardware: "cpu" };
    const field = hardware !== "" && backend !== ComputeBackend.COMPUTE_BACKEND_CUDA && gpuCount === 0 ? f("hardware") : f("");
    throw new AppError(
      "FAILED_PRECONDITION",
      "NO_GPU_SLOTS",
      `${field}: this trainer has no GPU slots (GPU jobs run on the trainer's own GPU, LATHE_TRAINER_GPUS, or as Kubernetes Jobs on a GPU node pool: set LATHE_TRAINER_K8S_NAMESPACE and LATHE_TRAINER_K8S_IMAGE); use COMPUTE_BACKEND_CPU or leave compute unset, and estimate GPU types with EstimateFineTuningJob`,
      { field },
    );
  }
  if (gpuCount > gpusPerJob)
    throw new AppError(
      "FAILED_PRECONDITION",
      "TOO_MANY_GPUS",
      `${f("gpu_count")}: asks for ${gpuCount} GPUs and this trainer trains a job on at most ${gpusPerJob} (its own GPU slots, LATHE_TRAINER_GPUS; a Kubernetes runner gives a job up to ${maxGpusPerJob}); ask for ${gpusPerJob}`,
      { field: f("gpu_count") },
    );
  return { backend: "cuda", gpuCount: Math.max(1, gpuCount), hardware };
}
