package remedy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// Workload kinds scale_replicas can scale.
const (
	KindStatefulSet = "statefulset"
	KindDeployment  = "deployment"
)

// ScaleConfig configures scale_replicas (flags --k8s-namespace,
// --k8s-replicas kind/name, --max-replicas).
type ScaleConfig struct {
	Namespace string
	// Kind is KindStatefulSet or KindDeployment.
	Kind string
	Name string
	// MaxReplicas caps the scale-up.
	MaxReplicas int32
	// Kubeconfig is a kubeconfig file for running outside the cluster;
	// empty means in-cluster configuration only.
	Kubeconfig string
	// PollInterval is how often readiness is checked (default 2 s).
	PollInterval time.Duration
}

// ErrConfig is returned (wrapped) for an invalid scale_replicas configuration.
var ErrConfig = errors.New("invalid scale_replicas configuration")

// ErrChangedSince is returned (wrapped) by Rollback when someone else
// changed the replica count after the scale-up: it is not overridden.
var ErrChangedSince = errors.New("replica count changed since the scale-up")

var dns1123 = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// ParseWorkload parses "kind/name" (statefulset/…, sts/…, deployment/…,
// deploy/…) as given to --k8s-replicas.
func ParseWorkload(s string) (kind, name string, err error) {
	k, n, ok := strings.Cut(s, "/")
	if !ok || n == "" {
		return "", "", fmt.Errorf("%w: workload %q is not kind/name (e.g. statefulset/pg-replicas)", ErrConfig, s)
	}
	switch strings.ToLower(k) {
	case "statefulset", "statefulsets", "sts":
		k = KindStatefulSet
	case "deployment", "deployments", "deploy":
		k = KindDeployment
	default:
		return "", "", fmt.Errorf("%w: workload kind %q is neither statefulset nor deployment", ErrConfig, k)
	}
	return k, n, nil
}

func (c ScaleConfig) validate() error {
	switch {
	case c.Kind != KindStatefulSet && c.Kind != KindDeployment:
		return fmt.Errorf("%w: kind %q is neither %s nor %s", ErrConfig, c.Kind, KindStatefulSet, KindDeployment)
	case len(c.Name) > 253 || !dns1123.MatchString(c.Name):
		return fmt.Errorf("%w: workload name %q is not a Kubernetes object name", ErrConfig, c.Name)
	case len(c.Namespace) > 63 || !dns1123.MatchString(c.Namespace) || strings.Contains(c.Namespace, "."):
		return fmt.Errorf("%w: namespace %q is not a Kubernetes namespace name", ErrConfig, c.Namespace)
	case c.MaxReplicas < 1:
		return fmt.Errorf("%w: max_replicas %d must be at least 1", ErrConfig, c.MaxReplicas)
	}
	return nil
}

// ScaleReplicas is scale_replicas: it scales the read-replica workload up
// by 50% (rounded up, at least one more), capped by MaxReplicas, through
// the scale subresource, and waits until the new replicas are ready.
// Rollback scales back to the recorded previous count.
//
// Approval is operator policy, not a property of the strategy: the healing
// configuration's require_approval_strategies lists scale_replicas by
// default.
type ScaleReplicas struct {
	cfg         ScaleConfig
	client      kubernetes.Interface
	unavailable string
}

// NewScaleReplicas validates cfg and connects to the Kubernetes API: in a
// cluster through the pod's service account, else through cfg.Kubeconfig.
// With neither (or no workload configured) it returns a strategy that
// reports itself unavailable, with the reason, and is never selected; an
// invalid configuration is an error.
func NewScaleReplicas(cfg ScaleConfig) (*ScaleReplicas, error) {
	if cfg.Name == "" && cfg.Kind == "" {
		return &ScaleReplicas{cfg: cfg, unavailable: "no read-replica workload configured (--k8s-replicas kind/name)"}, nil
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rcfg, err := rest.InClusterConfig()
	if err != nil {
		if cfg.Kubeconfig == "" {
			return &ScaleReplicas{cfg: cfg, unavailable: fmt.Sprintf("not running in a Kubernetes cluster and no kubeconfig given: %v", err)}, nil
		}
		rcfg, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
		if err != nil {
			return &ScaleReplicas{cfg: cfg, unavailable: fmt.Sprintf("kubeconfig %s: %v", cfg.Kubeconfig, err)}, nil
		}
	}
	cs, err := kubernetes.NewForConfig(rcfg)
	if err != nil {
		return &ScaleReplicas{cfg: cfg, unavailable: fmt.Sprintf("Kubernetes client: %v", err)}, nil
	}
	return &ScaleReplicas{cfg: cfg, client: cs}, nil
}

// NewScaleReplicasWithClient uses the given clientset (a fake in tests).
func NewScaleReplicasWithClient(cfg ScaleConfig, client kubernetes.Interface) (*ScaleReplicas, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &ScaleReplicas{cfg: cfg, client: client}, nil
}

func (*ScaleReplicas) Name() string { return "scale_replicas" }
func (*ScaleReplicas) Handles() []classify.Class {
	return []classify.Class{classify.ClassHotspotCongestion}
}
func (*ScaleReplicas) Impact() float64 { return 0.2 }

// EstimatedDuration covers pulling and starting replica pods.
func (*ScaleReplicas) EstimatedDuration() time.Duration { return 3 * time.Minute }
func (*ScaleReplicas) Reversible() bool                 { return true }

// Available reports whether the API is reachable and the workload's scale
// subresource readable (so RBAC and names are checked before selection).
func (s *ScaleReplicas) Available(ctx context.Context) (bool, string) {
	if s.client == nil {
		return false, s.unavailable
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.getScale(ctx); err != nil {
		return false, fmt.Sprintf("cannot read the scale of %s: %v", s.workload(), err)
	}
	return true, ""
}

func (s *ScaleReplicas) workload() string {
	return fmt.Sprintf("%s %s/%s", s.cfg.Kind, s.cfg.Namespace, s.cfg.Name)
}

func (s *ScaleReplicas) getScale(ctx context.Context) (*autoscalingv1.Scale, error) {
	if s.cfg.Kind == KindDeployment {
		return s.client.AppsV1().Deployments(s.cfg.Namespace).GetScale(ctx, s.cfg.Name, metav1.GetOptions{})
	}
	return s.client.AppsV1().StatefulSets(s.cfg.Namespace).GetScale(ctx, s.cfg.Name, metav1.GetOptions{})
}

func (s *ScaleReplicas) updateScale(ctx context.Context, sc *autoscalingv1.Scale) error {
	var err error
	if s.cfg.Kind == KindDeployment {
		_, err = s.client.AppsV1().Deployments(s.cfg.Namespace).UpdateScale(ctx, s.cfg.Name, sc, metav1.UpdateOptions{})
	} else {
		_, err = s.client.AppsV1().StatefulSets(s.cfg.Namespace).UpdateScale(ctx, s.cfg.Name, sc, metav1.UpdateOptions{})
	}
	return err
}

// ready is the workload's ready replicas, once its controller has observed
// the latest spec (before that the status describes the old one).
func (s *ScaleReplicas) ready(ctx context.Context) (ready int32, observed bool, err error) {
	if s.cfg.Kind == KindDeployment {
		d, err := s.client.AppsV1().Deployments(s.cfg.Namespace).Get(ctx, s.cfg.Name, metav1.GetOptions{})
		if err != nil {
			return 0, false, err
		}
		return d.Status.ReadyReplicas, d.Status.ObservedGeneration >= d.Generation, nil
	}
	st, err := s.client.AppsV1().StatefulSets(s.cfg.Namespace).Get(ctx, s.cfg.Name, metav1.GetOptions{})
	if err != nil {
		return 0, false, err
	}
	return st.Status.ReadyReplicas, st.Status.ObservedGeneration >= st.Generation, nil
}

// scaleAction is recorded before the scale-up.
type scaleAction struct {
	Kind      string `json:"kind"` // "scale"
	Workload  string `json:"workload_kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Previous  int32  `json:"previous_replicas"`
	New       int32  `json:"new_replicas"`
}

// target is +50% rounded up, at least +1, capped.
func (s *ScaleReplicas) target(current int32) int32 {
	up := max((current+1)/2, 1)
	return min(current+up, s.cfg.MaxReplicas)
}

// Plan reports the scale-up Execute would make.
func (s *ScaleReplicas) Plan(ctx context.Context, _ *strategy.Context) (Plan, error) {
	p := Plan{Strategy: s.Name(), Steps: []Step{}}
	if s.client == nil {
		p.Noop, p.Reason = true, "unavailable: "+s.unavailable
		return p, nil
	}
	sc, err := s.getScale(ctx)
	if err != nil {
		return Plan{}, fmt.Errorf("scale_replicas: read the scale of %s: %w", s.workload(), err)
	}
	cur := sc.Spec.Replicas
	if cur >= s.cfg.MaxReplicas {
		p.Noop, p.Reason = true, fmt.Sprintf("%s already has %d replicas, max_replicas is %d", s.workload(), cur, s.cfg.MaxReplicas)
		return p, nil
	}
	p.Steps = append(p.Steps, Step{Action: "scale", Target: s.workload(),
		Detail: map[string]any{"from": cur, "to": s.target(cur), "max_replicas": s.cfg.MaxReplicas}})
	return p, nil
}

// Execute scales up and waits for the new replicas to be ready.
func (s *ScaleReplicas) Execute(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
	if s.client == nil {
		return strategy.Result{}, fmt.Errorf("scale_replicas is unavailable: %s", s.unavailable)
	}
	sc, err := s.getScale(ctx)
	if err != nil {
		return strategy.Result{}, fmt.Errorf("scale_replicas: read the scale of %s: %w", s.workload(), err)
	}
	cur := sc.Spec.Replicas
	if cur >= s.cfg.MaxReplicas {
		return strategy.NoopResult(fmt.Sprintf("%s already has %d replicas, max_replicas is %d", s.workload(), cur, s.cfg.MaxReplicas)), nil
	}
	want := s.target(cur)
	if err := rc.Record(scaleAction{Kind: "scale", Workload: s.cfg.Kind, Namespace: s.cfg.Namespace, Name: s.cfg.Name,
		Previous: cur, New: want}); err != nil {
		return strategy.Result{}, err
	}
	// sc carries its resourceVersion: a concurrent change (an HPA, an
	// operator) makes this a conflict instead of being overwritten.
	sc.Spec.Replicas = want
	if err := s.updateScale(ctx, sc); err != nil {
		return strategy.Result{}, fmt.Errorf("scale_replicas: scale %s from %d to %d: %w", s.workload(), cur, want, err)
	}
	meta := map[string]any{"workload": s.workload(), "previous_replicas": cur, "new_replicas": want,
		"max_replicas": s.cfg.MaxReplicas}
	started := time.Now()
	poll := s.cfg.PollInterval
	if poll <= 0 {
		poll = 2 * time.Second
	}
	for {
		ready, observed, err := s.ready(ctx)
		if err == nil && observed && ready >= want {
			meta["ready_replicas"] = ready
			meta["ready_after_seconds"] = time.Since(started).Seconds()
			break
		}
		select {
		case <-time.After(poll):
		case <-ctx.Done():
			meta["ready_replicas"] = ready
			return strategy.Result{ActionsTaken: 1, Metadata: meta},
				fmt.Errorf("scale_replicas: %s scaled to %d, %d ready when interrupted: %w", s.workload(), want, ready, ctx.Err())
		}
	}
	res := strategy.Result{Success: true, ActionsTaken: 1, Metadata: meta}
	if rc.Sample != nil {
		if l, err := rc.SampleIntegrity(ctx); err == nil {
			res.Improvement = rc.Improvement(l)
		}
	}
	return res, nil
}

// Rollback scales back to the recorded previous count, unless the count
// was changed by someone else since (ErrChangedSince).
func (s *ScaleReplicas) Rollback(ctx context.Context, rc *strategy.Context) error {
	acts, err := rc.Actions()
	if err != nil {
		return err
	}
	var errs []error
	for i := len(acts) - 1; i >= 0; i-- {
		var a scaleAction
		if err := json.Unmarshal(acts[i], &a); err != nil {
			errs = append(errs, fmt.Errorf("scale_replicas: action %d: %w", i, err))
			continue
		}
		if a.Kind != "scale" {
			continue
		}
		if s.client == nil {
			errs = append(errs, fmt.Errorf("scale_replicas: cannot scale %s/%s back to %d: %s", a.Namespace, a.Name, a.Previous, s.unavailable))
			continue
		}
		// The recorded workload, not the configured one: configuration
		// may have changed across a restart.
		r := &ScaleReplicas{cfg: s.cfg, client: s.client}
		r.cfg.Kind, r.cfg.Namespace, r.cfg.Name = a.Workload, a.Namespace, a.Name
		sc, err := r.getScale(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("scale_replicas: read the scale of %s: %w", r.workload(), err))
			continue
		}
		switch sc.Spec.Replicas {
		case a.Previous:
			continue // already back
		case a.New:
		default:
			errs = append(errs, fmt.Errorf("scale_replicas: %s has %d replicas, not the %d it was scaled to; not scaling it to %d: %w",
				r.workload(), sc.Spec.Replicas, a.New, a.Previous, ErrChangedSince))
			continue
		}
		sc.Spec.Replicas = a.Previous
		if err := r.updateScale(ctx, sc); err != nil {
			errs = append(errs, fmt.Errorf("scale_replicas: scale %s back to %d: %w", r.workload(), a.Previous, err))
		}
	}
	return errors.Join(errs...)
}
