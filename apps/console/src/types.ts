// The proto3 JSON shapes the console reads (fields at their default value are left out by the
// facade, so every field is optional). Named after the messages in proto/lathe/*/v1.

export interface Duration {
  seconds?: number;
  nanos?: number;
}
export interface ErrorInfo {
  code?: string;
  reason?: string;
  message?: string;
}
export interface ConfidenceInterval {
  lower?: number;
  upper?: number;
  level?: number;
}
export interface MetricValue {
  metric?: string;
  value?: number;
  confidenceInterval?: ConfidenceInterval;
  exampleCount?: number;
}
export interface MetricDifference {
  metric?: string;
  candidateValue?: number;
  baselineValue?: number;
  meanDifference?: number;
  confidenceInterval?: ConfidenceInterval;
  pValue?: number;
  exampleCount?: number;
  winCount?: number;
  lossCount?: number;
  tieCount?: number;
}

export interface FineTuningProgress {
  step?: number;
  totalSteps?: number;
  epoch?: number;
  loss?: number;
  evalLoss?: number;
  learningRate?: number;
  gradNorm?: number;
  tokensPerSecond?: number;
  processedTokens?: number;
  eta?: Duration;
  updateTime?: string;
}
export interface HardwareEstimate {
  hardware?: string;
  tokensPerSecond?: number;
  duration?: Duration;
  fits?: boolean;
  tokensPerSecondSource?: string;
}
export interface FineTuningJob {
  name: string;
  displayName?: string;
  labels?: Record<string, string>;
  createTime?: string;
  startTime?: string;
  endTime?: string;
  state?: string;
  baseModel?: string;
  trainDatasetVersion?: string;
  evalDatasetVersion?: string;
  trainingArguments?: { numTrainEpochs?: number; learningRate?: number; perDeviceTrainBatchSize?: number; maxSeqLength?: number };
  estimate?: { totalSteps?: number; totalTokens?: number; trainRowCount?: number; hardwareEstimates?: HardwareEstimate[]; recommendedHardware?: string };
  progress?: FineTuningProgress;
  result?: {
    finalLoss?: number;
    finalEvalLoss?: number;
    trainingDuration?: Duration;
    tokensPerSecond?: number;
    estimatedDuration?: Duration;
    estimatedTokensPerSecond?: number;
    estimatedTokensPerSecondSource?: string;
    processedTokens?: number;
    bestCheckpoint?: string;
  };
  error?: ErrorInfo;
  attemptCount?: number;
  worker?: string;
  adapterVersion?: string;
  evaluationRun?: string;
  cancelReason?: string;
}
export interface Checkpoint {
  name: string;
  createTime?: string;
  step?: number;
  epoch?: number;
  loss?: number;
  evalLoss?: number;
  sizeBytes?: number;
  resumable?: boolean;
}
export interface MetricsRow {
  step?: number;
  epoch?: number;
  trainLoss?: number;
  evalLoss?: number;
  learningRate?: number;
  tokensPerSecond?: number;
}

export interface Dataset {
  name: string;
  displayName?: string;
  latestVersion?: string;
  versionCount?: number;
  createTime?: string;
}
export interface DatasetVersion {
  name: string;
  state?: string;
  format?: string;
  lineCount?: number;
  rowCount?: number;
  passingRowCount?: number;
  sizeBytes?: number;
  readiness?: string;
  origin?: string;
  parentVersion?: string;
  createTime?: string;
  error?: ErrorInfo;
}
export interface QualityReport {
  lineCount?: number;
  rowCount?: number;
  passingRowCount?: number;
  checkResults?: { check?: string; severity?: string; failedCount?: number; failedLines?: number[]; failedLinesTruncated?: boolean; skipped?: boolean }[];
  exactDuplicateClusters?: { lines?: number[] }[];
  nearDuplicateClusters?: { lines?: number[]; minSimilarity?: number }[];
  piiHits?: { line?: number; kind?: string; maskedText?: string }[];
  tokenStatistics?: { tokenizerModel?: string; maxSeqLength?: number; minTokens?: number; medianTokens?: number; p95Tokens?: number; maxTokens?: number; meanTokens?: number; totalTokens?: number; overMaxSeqLengthCount?: number };
  readiness?: string;
  readinessReasons?: { severity?: string; check?: string; code?: string; message?: string; affectedRowCount?: number }[];
}
export interface DatasetRow {
  lineNumber?: number;
  messages?: { role?: string; content?: string }[];
  failedChecks?: string[];
  tokenCount?: number;
}

export interface EvaluatedModel {
  model?: string;
  adapterVersion?: string;
  fewShot?: { datasetVersion?: string; shots?: number };
}
export interface ServingStats {
  answerCount?: number;
  promptTokens?: number;
  completionTokens?: number;
  latencyP50Ms?: number;
  latencyP95Ms?: number;
  costPer1000Answers?: number;
}
export interface EvaluationRun {
  name: string;
  displayName?: string;
  state?: string;
  createTime?: string;
  candidate?: EvaluatedModel;
  baseline?: EvaluatedModel;
  evalDatasetVersion?: string;
  totalExampleCount?: number;
  completedExampleCount?: number;
  failedExampleCount?: number;
  candidateResults?: MetricValue[];
  baselineResults?: MetricValue[];
  differences?: MetricDifference[];
  candidateServing?: ServingStats;
  baselineServing?: ServingStats;
  judgeResult?: { model?: string; winCount?: number; lossCount?: number; tieCount?: number; winRate?: number; confidenceInterval?: ConfidenceInterval };
  fineTuningJob?: string;
  error?: ErrorInfo;
}
export interface Prediction {
  text?: string;
  scores?: MetricValue[];
  error?: string;
}
export interface EvaluationExample {
  index?: number;
  prompt?: string;
  reference?: string;
  candidate?: Prediction;
  baseline?: Prediction;
  judgeVerdict?: string;
}

export interface Adapter {
  name: string;
  displayName?: string;
  baseModel?: string;
  latestVersion?: string;
  versionCount?: number;
}
export interface AdapterVersion {
  name: string;
  createTime?: string;
  fineTuningJob?: string;
  trainDatasetVersion?: string;
  headlineMetrics?: MetricValue[];
  aliases?: string[];
  sizeBytes?: number;
  evaluationRuns?: string[];
}
export interface ConditionOutcome {
  condition?: { metric?: string; minDelta?: number; requireCiAboveZero?: boolean; minValue?: number };
  difference?: MetricDifference;
  satisfied?: boolean;
}
export interface Alias {
  name: string;
  adapterVersion?: string;
  updateTime?: string;
  history?: { fromVersion?: string; toVersion?: string; moveTime?: string; trigger?: string; reason?: string; actor?: string; evaluationRun?: string }[];
  decisions?: { evaluationRun?: string; candidateVersion?: string; promoted?: boolean; reason?: string; outcomes?: ConditionOutcome[]; decideTime?: string }[];
}
export interface LineageNode {
  name: string;
  kind?: string;
  displayName?: string;
}
export interface LineageEdge {
  source: string;
  target: string;
  relation?: string;
}

export interface Deployment {
  name: string;
  displayName?: string;
  state?: string;
  baseModel?: string;
  servedModelName?: string;
  adapters?: { source?: string; servedName?: string; adapterVersion?: string }[];
  backend?: string;
  contextLength?: number;
  error?: ErrorInfo;
  updateTime?: string;
}
