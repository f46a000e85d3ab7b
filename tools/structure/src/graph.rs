//! Strongly connected components of a small directed graph (Tarjan's algorithm).
//!
//! The graphs here are the modules of one level of one crate, a few dozen nodes, so
//! the recursive form is used; its depth is bounded by the number of nodes.

/// The components of two or more nodes of the graph with `nodes` nodes and `edges`
/// (from, to), each sorted, in order of their smallest node. A node alone is no cycle
/// (the graphs here have no self-edges).
pub fn cycles(nodes: usize, edges: &[(usize, usize)]) -> Vec<Vec<usize>> {
    let mut successors = vec![Vec::new(); nodes];
    for &(from, to) in edges {
        successors[from].push(to);
    }
    let mut tarjan = Tarjan {
        successors,
        index: vec![None; nodes],
        low: vec![0; nodes],
        on_stack: vec![false; nodes],
        stack: Vec::new(),
        next_index: 0,
        components: Vec::new(),
    };
    for node in 0..nodes {
        if tarjan.index[node].is_none() {
            tarjan.visit(node);
        }
    }
    let mut components: Vec<Vec<usize>> = tarjan
        .components
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    for component in &mut components {
        component.sort_unstable();
    }
    components.sort();
    components
}

struct Tarjan {
    successors: Vec<Vec<usize>>,
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next_index: usize,
    components: Vec<Vec<usize>>,
}

impl Tarjan {
    fn visit(&mut self, node: usize) {
        self.index[node] = Some(self.next_index);
        self.low[node] = self.next_index;
        self.next_index += 1;
        self.stack.push(node);
        self.on_stack[node] = true;
        for successor in self.successors[node].clone() {
            match self.index[successor] {
                None => {
                    self.visit(successor);
                    self.low[node] = self.low[node].min(self.low[successor]);
                }
                Some(index) if self.on_stack[successor] => {
                    self.low[node] = self.low[node].min(index)
                }
                Some(_) => {}
            }
        }
        if Some(self.low[node]) == self.index[node] {
            let mut component = Vec::new();
            while let Some(member) = self.stack.pop() {
                self.on_stack[member] = false;
                component.push(member);
                if member == node {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cycles;

    #[test]
    fn a_chain_has_no_cycle() {
        assert!(cycles(3, &[(0, 1), (1, 2)]).is_empty());
    }

    #[test]
    fn two_separate_cycles_and_a_bridge_between_them() {
        let edges = [(0, 1), (1, 0), (1, 2), (2, 3), (3, 4), (4, 2), (5, 0)];
        assert_eq!(cycles(6, &edges), [vec![0, 1], vec![2, 3, 4]]);
    }

    #[test]
    fn a_back_edge_joins_a_chain_into_one_component() {
        let edges = [(0, 1), (1, 2), (2, 3), (3, 1), (2, 0)];
        assert_eq!(cycles(4, &edges), [vec![0, 1, 2, 3]]);
    }
}
