package remedy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/healconfig"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// cluster is a fake API server for one StatefulSet: client-go's fake
// clientset plus what the real API server and controller do that the fake
// does not: the scale subresource (backed by spec.replicas, bumping the
// generation on a change) and a controller that makes pods ready.
type cluster struct {
	cs *fake.Clientset
	mu sync.Mutex
	// readyDelay is how long "pods" take to become ready.
	readyDelay time.Duration
	// stuck makes the controller never report readiness.
	stuck   bool
	updates []int32 // every replica count written through the scale subresource
}

func newCluster(t *testing.T, replicas int32) *cluster {
	t.Helper()
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "pg-replicas", Namespace: "db", Generation: 1},
		Spec:       appsv1.StatefulSetSpec{Replicas: &replicas},
		Status:     appsv1.StatefulSetStatus{Replicas: replicas, ReadyReplicas: replicas, ObservedGeneration: 1},
	}
	c := &cluster{cs: fake.NewClientset(sts), readyDelay: 150 * time.Millisecond}
	tracker := c.cs.Tracker()
	gvr := appsv1.SchemeGroupVersion.WithResource("statefulsets")
	c.cs.PrependReactor("get", "statefulsets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "scale" {
			return false, nil, nil
		}
		obj, err := tracker.Get(gvr, a.GetNamespace(), a.(k8stesting.GetAction).GetName())
		if err != nil {
			return true, nil, err
		}
		s := obj.(*appsv1.StatefulSet)
		return true, &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace,
			ResourceVersion: s.ResourceVersion}, Spec: autoscalingv1.ScaleSpec{Replicas: *s.Spec.Replicas},
			Status: autoscalingv1.ScaleStatus{Replicas: s.Status.Replicas}}, nil
	})
	c.cs.PrependReactor("update", "statefulsets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "scale" {
			return false, nil, nil
		}
		sc := a.(k8stesting.UpdateAction).GetObject().(*autoscalingv1.Scale)
		obj, err := tracker.Get(gvr, a.GetNamespace(), sc.Name)
		if err != nil {
			return true, nil, err
		}
		s := obj.(*appsv1.StatefulSet).DeepCopy()
		if sc.ResourceVersion != "" && sc.ResourceVersion != s.ResourceVersion {
			return true, nil, fmt.Errorf("conflict: resourceVersion %s, object has %s", sc.ResourceVersion, s.ResourceVersion)
		}
		r := sc.Spec.Replicas
		s.Spec.Replicas = &r
		s.Generation++
		c.mu.Lock()
		c.updates = append(c.updates, r)
		c.mu.Unlock()
		if err := tracker.Update(gvr, s, s.Namespace); err != nil {
			return true, nil, err
		}
		go c.reconcile(t, s.Generation, r)
		return true, sc, nil
	})
	return c
}

// reconcile is the StatefulSet controller: after readyDelay the pods of
// generation gen are ready.
func (c *cluster) reconcile(t *testing.T, gen int64, replicas int32) {
	time.Sleep(c.readyDelay)
	c.mu.Lock()
	stuck := c.stuck
	c.mu.Unlock()
	if stuck {
		return
	}
	ctx := context.Background()
	s, err := c.cs.AppsV1().StatefulSets("db").Get(ctx, "pg-replicas", metav1.GetOptions{})
	if err != nil || s.Generation != gen {
		return // superseded
	}
	s.Status = appsv1.StatefulSetStatus{Replicas: replicas, ReadyReplicas: replicas, ObservedGeneration: gen}
	if _, err := c.cs.AppsV1().StatefulSets("db").UpdateStatus(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Errorf("controller: %v", err)
	}
}

func (c *cluster) replicas(t *testing.T) (spec, ready int32) {
	t.Helper()
	s, err := c.cs.AppsV1().StatefulSets("db").Get(context.Background(), "pg-replicas", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return *s.Spec.Replicas, s.Status.ReadyReplicas
}

func scaleCfg(max int32) ScaleConfig {
	return ScaleConfig{Namespace: "db", Kind: KindStatefulSet, Name: "pg-replicas", MaxReplicas: max, PollInterval: 20 * time.Millisecond}
}

func scaleRC() *strategy.Context {
	return &strategy.Context{Collection: "emb", CollectionID: 1, Recorder: &strategy.MemoryRecorder{},
		Started: time.Now(), Timeout: 10 * time.Second}
}

func TestScaleReplicas(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		from, max, want int32
	}{{4, 10, 6}, {3, 10, 5}, {1, 10, 2}, {0, 10, 1}, {4, 5, 5}} {
		t.Run(fmt.Sprintf("from %d max %d", tc.from, tc.max), func(t *testing.T) {
			c := newCluster(t, tc.from)
			s, err := NewScaleReplicasWithClient(scaleCfg(tc.max), c.cs)
			if err != nil {
				t.Fatal(err)
			}
			if ok, why := s.Available(ctx); !ok {
				t.Fatalf("unavailable: %s", why)
			}
			p, err := s.Plan(ctx, scaleRC())
			if err != nil || p.Noop || p.Steps[0].Detail["to"] != tc.want {
				t.Fatalf("plan %+v, %v; want to %d", p, err, tc.want)
			}
			if spec, _ := c.replicas(t); spec != tc.from {
				t.Fatalf("the plan scaled: %d", spec)
			}
			rc := scaleRC()
			res, err := s.Execute(ctx, rc)
			if err != nil || !res.Success {
				t.Fatalf("execute: %+v, %v", res, err)
			}
			spec, ready := c.replicas(t)
			if spec != tc.want || ready != tc.want {
				t.Fatalf("after execute: spec %d ready %d, want %d", spec, ready, tc.want)
			}
			if res.Metadata["ready_replicas"] != tc.want {
				t.Fatalf("Execute returned before the replicas were ready: %v", res.Metadata)
			}
			// Rollback from the recorded JSON, by a fresh strategy (a restart).
			s2, _ := NewScaleReplicasWithClient(scaleCfg(tc.max), c.cs)
			if err := s2.Rollback(ctx, rc); err != nil {
				t.Fatal(err)
			}
			if spec, _ := c.replicas(t); spec != tc.from {
				t.Fatalf("after rollback: %d replicas, want %d", spec, tc.from)
			}
			if got := c.updates; len(got) != 2 || got[0] != tc.want || got[1] != tc.from {
				t.Fatalf("scale writes %v, want [%d %d]", got, tc.want, tc.from)
			}
		})
	}

	t.Run("noop at the cap", func(t *testing.T) {
		c := newCluster(t, 5)
		s, _ := NewScaleReplicasWithClient(scaleCfg(5), c.cs)
		rc := scaleRC()
		res, err := s.Execute(ctx, rc)
		if err != nil || !res.Noop || res.Success {
			t.Fatalf("%+v, %v; want a noop", res, err)
		}
		if acts, _ := rc.Actions(); len(acts) != 0 || len(c.updates) != 0 {
			t.Fatalf("recorded %d, wrote %v", len(acts), c.updates)
		}
	})

	t.Run("waits for readiness and honours cancellation", func(t *testing.T) {
		c := newCluster(t, 2)
		c.stuck = true
		s, _ := NewScaleReplicasWithClient(scaleCfg(10), c.cs)
		rc := scaleRC()
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		res, err := s.Execute(cctx, rc)
		if !errors.Is(err, context.DeadlineExceeded) || res.Success {
			t.Fatalf("%+v, %v; want a timeout while waiting for readiness", res, err)
		}
		// It acted and recorded: rollback undoes it.
		if spec, _ := c.replicas(t); spec != 3 {
			t.Fatalf("spec %d, want 3", spec)
		}
		if err := s.Rollback(ctx, rc); err != nil {
			t.Fatal(err)
		}
		if spec, _ := c.replicas(t); spec != 2 {
			t.Fatalf("after rollback %d, want 2", spec)
		}
	})

	t.Run("rollback leaves someone else's change alone", func(t *testing.T) {
		c := newCluster(t, 2)
		s, _ := NewScaleReplicasWithClient(scaleCfg(10), c.cs)
		rc := scaleRC()
		if _, err := s.Execute(ctx, rc); err != nil {
			t.Fatal(err)
		}
		sc, _ := c.cs.AppsV1().StatefulSets("db").GetScale(ctx, "pg-replicas", metav1.GetOptions{})
		sc.Spec.Replicas = 7
		if _, err := c.cs.AppsV1().StatefulSets("db").UpdateScale(ctx, "pg-replicas", sc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := s.Rollback(ctx, rc); !errors.Is(err, ErrChangedSince) {
			t.Fatalf("rollback: %v, want ErrChangedSince", err)
		}
		if spec, _ := c.replicas(t); spec != 7 {
			t.Fatalf("rollback overrode the operator: %d", spec)
		}
	})

	t.Run("unavailable outside a cluster and never selected", func(t *testing.T) {
		t.Setenv("KUBERNETES_SERVICE_HOST", "")
		t.Setenv("KUBERNETES_SERVICE_PORT", "")
		s, err := NewScaleReplicas(scaleCfg(10))
		if err != nil {
			t.Fatal(err)
		}
		ok, why := s.Available(ctx)
		if ok || !strings.Contains(why, "not running in a Kubernetes cluster") {
			t.Fatalf("available %v (%s)", ok, why)
		}
		reg, err := strategy.NewRegistry(s)
		if err != nil {
			t.Fatal(err)
		}
		sel := reg.Select(ctx, classify.Problem{Class: classify.ClassHotspotCongestion}, strategy.Limits{MaxImpact: 1})
		if sel.Found() {
			t.Fatalf("selected an unavailable strategy: %s", sel.Explain())
		}
		if !strings.Contains(sel.Explain(), "not running in a Kubernetes cluster") {
			t.Fatalf("selection does not explain why: %s", sel.Explain())
		}
		if _, err := s.Execute(ctx, scaleRC()); err == nil {
			t.Fatal("Execute of an unavailable strategy succeeded")
		}
	})

	t.Run("bad configuration", func(t *testing.T) {
		for _, cfg := range []ScaleConfig{
			{Namespace: "db", Kind: "daemonset", Name: "x", MaxReplicas: 3},
			{Namespace: "db", Kind: KindDeployment, Name: "Bad_Name", MaxReplicas: 3},
			{Namespace: "", Kind: KindDeployment, Name: "x", MaxReplicas: 3},
			{Namespace: "db", Kind: KindDeployment, Name: "x", MaxReplicas: 0},
		} {
			if _, err := NewScaleReplicas(cfg); !errors.Is(err, ErrConfig) {
				t.Errorf("%+v: %v, want ErrConfig", cfg, err)
			}
		}
		for in, want := range map[string]string{"sts/a": KindStatefulSet, "Deployment/b": KindDeployment} {
			if k, _, err := ParseWorkload(in); err != nil || k != want {
				t.Errorf("ParseWorkload(%q) = %q, %v", in, k, err)
			}
		}
		for _, in := range []string{"a", "sts/", "job/a"} {
			if _, _, err := ParseWorkload(in); !errors.Is(err, ErrConfig) {
				t.Errorf("ParseWorkload(%q): %v", in, err)
			}
		}
	})

	t.Run("approval required by default", func(t *testing.T) {
		def := healconfig.Default()
		found := false
		for _, n := range def.RequireApprovalStrategies {
			found = found || n == "scale_replicas"
		}
		if !found {
			t.Fatalf("require_approval_strategies default %v lacks scale_replicas", def.RequireApprovalStrategies)
		}
	})
}

func TestNewRegistersAll(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	ss, err := New(func(context.Context) (*pgx.Conn, error) { return nil, errors.New("unused") }, ScaleConfig{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := strategy.NewRegistry(ss...)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"compact_indexes", "drain_hot_partition", "evict_cold_data", "rebalance_partitions", "rebuild_centroids", "resume_replay", "scale_replicas"}
	got := reg.Names()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("registered %v, want %v", got, want)
	}
	for _, s := range ss {
		if _, ok := s.(Planner); !ok {
			t.Errorf("%s does not implement Planner", s.Name())
		}
	}
	if _, err := New(nil, ScaleConfig{}); err == nil {
		t.Fatal("New without a dialer succeeded")
	}
	if _, err := New(func(context.Context) (*pgx.Conn, error) { return nil, nil }, ScaleConfig{Kind: "job", Name: "x"}); !errors.Is(err, ErrConfig) {
		t.Fatalf("bad scale config: %v", err)
	}
}
